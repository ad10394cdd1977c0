"""Validates Kubernetes manifests with kubernetes-validate's Python API, in
strict mode (unknown fields are errors), against each version given.

Unlike its CLI, which only warns, a document whose schema is missing (a kind
or apiVersion the version does not know, for example one removed from
Kubernetes) counts as a failure here.

usage: python3 validate.py VERSION[,VERSION...] FILE...   ('-' reads stdin)
Prints one line per document and version; exits 1 if any failed, 2 on bad use.
"""

import sys

import kubernetes_validate
import yaml


def documents(path):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for index, doc in enumerate(yaml.safe_load_all(stream)):
            if doc is not None:
                yield index, doc


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    versions = [kubernetes_validate.latest_version() if v == "latest" else v for v in argv[1].split(",")]
    failures = 0
    checked = 0
    for path in argv[2:]:
        for index, doc in documents(path):
            name = f"{path}#{index} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for version in versions:
                checked += 1
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    print(f"ok   {version} {name}")
                except kubernetes_validate.SchemaNotFoundError:
                    failures += 1
                    print(f"FAIL {version} {name}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
                except kubernetes_validate.ValidationError as e:
                    failures += 1
                    where = "/".join(str(p) for p in e.path)
                    print(f"FAIL {version} {name}: {where}: {e.message}")
    print(f"{checked - failures} passed, {failures} failed")
    return 1 if failures or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
