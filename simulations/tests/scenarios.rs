//! The gross properties of murmur's gossip on small simulated clusters: everyone
//! converges, a killed member is dropped by all, a partition splits and heals, restarted
//! members come back, and a seed repeats the simulator's choices.

use std::time::Duration;

use murmur_sim::scenario::{self, Timing};
use murmur_sim::{Cluster, ClusterSpec, Conditions};

/// Short waits, still many gossip rounds long: the default interval is 250 ms.
fn timing() -> Timing {
    Timing {
        deadline: Duration::from_secs(30),
        settle: Duration::from_secs(1),
        window: Duration::from_secs(2),
        observe: Duration::from_secs(10),
        partition_hold: Duration::from_secs(15),
    }
}

fn quiet(_: &str) {}

#[tokio::test(start_paused = true)]
async fn small_cluster_converges() {
    let row = scenario::convergence(&ClusterSpec::new(12, 1), timing(), &quiet)
        .await
        .unwrap();

    assert!(row.join_all_s.is_some(), "{row:?}");
    assert!(row.change_all_s.is_some(), "{row:?}");
    assert!(row.change_all_rounds.unwrap() < 20.0, "{row:?}");
    assert!(row.bytes_per_member_per_s > 0.0, "{row:?}");
    assert_eq!(row.failed, 0);
}

#[tokio::test(start_paused = true)]
async fn killed_member_is_dropped_by_all() {
    let row = scenario::detection(&ClusterSpec::new(12, 2), timing(), &quiet)
        .await
        .unwrap();

    assert!(row.joined, "{row:?}");
    let detected = row.detect_all_s.expect("every member drops the killed one");
    assert!(detected < 10.0, "{row:?}");
    assert_eq!(row.false_down_reports, 0, "{row:?}");
}

#[tokio::test(start_paused = true)]
async fn lossy_network_still_detects() {
    let spec = ClusterSpec {
        conditions: Conditions {
            loss: 0.05,
            ..Conditions::default()
        },
        ..ClusterSpec::new(12, 3)
    };

    let row = scenario::detection(&spec, timing(), &quiet).await.unwrap();

    assert!(row.joined, "{row:?}");
    assert!(row.detect_all_s.is_some(), "{row:?}");
}

#[tokio::test(start_paused = true)]
async fn partition_splits_and_heals() {
    let row = scenario::partition(&ClusterSpec::new(12, 4), timing(), &quiet)
        .await
        .unwrap();

    assert_eq!(row.minority, 6);
    assert!(row.split_all_s.is_some(), "{row:?}");
    assert!(row.heal_all_s.is_some(), "{row:?}");
}

#[tokio::test(start_paused = true)]
async fn restarted_members_come_back() {
    let row = scenario::restart(&ClusterSpec::new(12, 5), timing(), &quiet)
        .await
        .unwrap();

    assert_eq!(row.restarted, 1);
    assert!(row.down_all_s.is_some(), "{row:?}");
    assert!(row.back_all_s.is_some(), "{row:?}");
}

#[tokio::test(start_paused = true)]
async fn same_seed_repeats_choices() {
    let spec = ClusterSpec::new(12, 6);

    let first = scenario::detection(&spec, timing(), &quiet).await.unwrap();
    let second = scenario::detection(&spec, timing(), &quiet).await.unwrap();
    let mut others = Vec::new();
    for seed in 7..10 {
        let row = scenario::detection(&ClusterSpec::new(12, seed), timing(), &quiet)
            .await
            .unwrap();
        others.push(row.victim);
    }

    assert_eq!(first.victim, second.victim);
    assert!(
        others.iter().any(|victim| *victim != first.victim),
        "seeds 6 to 9 all chose {}",
        first.victim
    );
    // chitchat's own peer choices are not seeded, so timings may differ a little.
    let (first_s, second_s) = (first.detect_all_s.unwrap(), second.detect_all_s.unwrap());
    assert!(
        (first_s - second_s).abs() < 2.0,
        "{first_s} s against {second_s} s"
    );
}

#[tokio::test(start_paused = true)]
async fn killed_member_can_restart() {
    let mut cluster = Cluster::start(&ClusterSpec::new(4, 8)).await.unwrap();
    let before = cluster.membership(3).unwrap().generation();

    assert!(cluster.kill(3));
    assert!(cluster.membership(3).is_none());
    cluster.restart(3).await.unwrap();

    let after = cluster.membership(3).unwrap().generation();
    assert!(after > before, "{after} after {before}");
    assert_eq!(cluster.running().len(), 4);
}
