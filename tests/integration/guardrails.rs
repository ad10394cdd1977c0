//! Guardrails: the 50-request race, and the cooldown's Retry-After.

use std::time::Duration;

use crate::harness::{Service, poll, race};

fn fifty_parallel_posts(max_concurrent: usize) {
    let mut svc = Service::start(&[
        ("MAX_CONCURRENT_CHAOS", &max_concurrent.to_string()),
        ("CHAOS_COOLDOWN_SECONDS", "0"),
        ("WORKERS", "8"),
    ]);
    // 10 millicores for 60 s: long enough to outlast the race on a busy
    // machine, too little to disturb anything else.
    let responses: Vec<_> = race(svc.addr, 50, "POST", |_| {
        "/load/cpu?duration=60&millicores=10".to_string()
    })
    .into_iter()
    .map(|r| r.expect("every racing client gets an answer"))
    .collect();
    let accepted = responses.iter().filter(|r| r.status == 202).count();
    let rejected: Vec<_> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(accepted, max_concurrent, "exactly MAX_CONCURRENT_CHAOS accepted");
    assert_eq!(rejected.len(), 50 - max_concurrent, "all others 429");
    for r in rejected {
        let retry: u64 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
        // When the soonest running load ends; a request taken by its worker
        // before the winner's can see up to one second more.
        assert!(
            (1..=61).contains(&retry),
            "Retry-After {retry}: when the running loads end"
        );
        assert!(r.json()["error"].as_str().unwrap().contains("MAX_CONCURRENT_CHAOS"));
    }
    assert_eq!(
        svc.metric("chaos_actions_total{action=\"cpu\",outcome=\"rejected\"}"),
        (50 - max_concurrent) as f64
    );
    // Each refusal is an event, in full or counted in the summary of a
    // flood, which the stop writes.
    svc.signal(libc::SIGTERM);
    assert_eq!(svc.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));
    let all = poll(Duration::from_secs(5), Duration::from_millis(10), || {
        svc.stderr().contains("SHUTDOWN_FINISHED").then_some(())
    });
    assert!(all.is_some(), "{}", svc.stderr());
    assert_eq!(
        svc.events_written_or_counted("CHAOS_REJECTED"),
        (50 - max_concurrent) as u64
    );
}

#[test]
fn fifty_parallel_posts_one_accepted() {
    fifty_parallel_posts(1);
}

#[test]
fn fifty_parallel_posts_three_accepted() {
    fifty_parallel_posts(3);
}

#[test]
fn cooldown_rejects_with_retry_after_and_applies_across_actions() {
    let svc = Service::start(&[("MAX_CONCURRENT_CHAOS", "5"), ("CHAOS_COOLDOWN_SECONDS", "60")]);
    assert_eq!(svc.post("/load/memory?mb=1").status, 200);
    for target in ["/load/memory?mb=1", "/load/cpu?duration=1&millicores=10"] {
        let r = svc.post(target);
        assert_eq!(r.status, 429, "{target}");
        let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        assert!(r.json()["error"].as_str().unwrap().contains("CHAOS_COOLDOWN_SECONDS"));
    }
    // The guardrails do not apply to /crash, and a 400 spends nothing.
    assert_eq!(svc.post("/crash?bad=1").status, 400);
    assert_eq!(svc.get("/health").status, 200);
}
