//! The merge, from answers shaped as prom-client 15's `getMetricsAsJSON()`.

use super::*;

fn worker(requests: u64, heap: f64, bucket: u64) -> String {
    format!(
        r#"[
        {{"help":"Requests","name":"app_requests_total","type":"counter","values":[
            {{"value":{requests},"labels":{{"route":"/"}}}}],"aggregator":"sum"}},
        {{"help":"Heap","name":"nodejs_heap_size_used_bytes","type":"gauge","values":[
            {{"value":{heap},"labels":{{}}}}],"aggregator":"max"}},
        {{"help":"Average","name":"app_lag","type":"gauge","values":[
            {{"value":{heap},"labels":{{}}}}],"aggregator":"average"}},
        {{"help":"Version","name":"nodejs_version_info","type":"gauge","values":[
            {{"value":1,"labels":{{"version":"v20.1.0","major":20}}}}],"aggregator":"first"}},
        {{"help":"Start","name":"process_start_time_seconds","type":"gauge","values":[
            {{"value":{heap},"labels":{{}}}}],"aggregator":"omit"}},
        {{"help":"Latency","name":"app_latency_seconds","type":"histogram","values":[
            {{"labels":{{"le":0.1,"route":"/"}},"value":{bucket},"metricName":"app_latency_seconds_bucket"}},
            {{"labels":{{"le":1,"route":"/"}},"value":{bucket},"metricName":"app_latency_seconds_bucket"}},
            {{"labels":{{"le":"+Inf","route":"/"}},"value":{bucket},"metricName":"app_latency_seconds_bucket"}},
            {{"labels":{{"route":"/"}},"value":0.5,"metricName":"app_latency_seconds_sum"}},
            {{"labels":{{"route":"/"}},"value":{bucket},"metricName":"app_latency_seconds_count"}}],"aggregator":"sum"}}
        ]"#
    )
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn sums_counters_and_histograms_and_applies_each_aggregator() {
    let (a, b) = (worker(150, 10.0, 3), worker(250, 30.0, 4));
    let answers = [
        Answer {
            role: "agent",
            id: 1,
            metrics: b"null",
        },
        Answer {
            role: "app",
            id: 2,
            metrics: a.as_bytes(),
        },
        Answer {
            role: "app",
            id: 3,
            metrics: b.as_bytes(),
        },
    ];
    let merged = merge(&answers, false);
    assert_eq!(merged.unreadable, 0);
    assert_eq!(
        lines(&merged.text),
        [
            "# HELP app_requests Requests",
            "# TYPE app_requests counter",
            "app_requests_total{route=\"/\"} 400",
            "# HELP nodejs_heap_size_used_bytes Heap",
            "# TYPE nodejs_heap_size_used_bytes gauge",
            "nodejs_heap_size_used_bytes 30",
            "# HELP app_lag Average",
            "# TYPE app_lag gauge",
            "app_lag 20",
            "# HELP nodejs_version_info Version",
            "# TYPE nodejs_version_info gauge",
            "nodejs_version_info{major=\"20\",version=\"v20.1.0\"} 1",
            "# HELP app_latency_seconds Latency",
            "# TYPE app_latency_seconds histogram",
            "app_latency_seconds_bucket{le=\"0.1\",route=\"/\"} 7",
            "app_latency_seconds_bucket{le=\"1.0\",route=\"/\"} 7",
            "app_latency_seconds_bucket{le=\"+Inf\",route=\"/\"} 7",
            "app_latency_seconds_count{route=\"/\"} 7",
            "app_latency_seconds_sum{route=\"/\"} 1",
        ]
    );
}

#[test]
fn by_process_lists_every_child_under_role_and_id() {
    let a = worker(150, 10.0, 3);
    let clash = r#"[{"help":"h","name":"jobs","type":"gauge","values":[{"value":2,"labels":{"role":"db"}}]}]"#;
    let answers = [
        Answer {
            role: "app",
            id: 2,
            metrics: a.as_bytes(),
        },
        Answer {
            role: "agent",
            id: 1,
            metrics: clash.as_bytes(),
        },
    ];
    let text = merge(&answers, true).text;
    for line in [
        "app_requests_total{route=\"/\",role=\"app\",id=\"2\"} 150",
        // omitted from the merge, there by process
        "process_start_time_seconds{role=\"app\",id=\"2\"} 10",
        "app_latency_seconds_bucket{le=\"+Inf\",route=\"/\",role=\"app\",id=\"2\"} 3",
        "jobs{exported_role=\"db\",role=\"agent\",id=\"1\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
}

#[test]
fn groups_series_of_a_histogram_and_orders_buckets() {
    // a label set only the second child has, and buckets listed out of order
    let one = r#"[{"name":"h","help":"","type":"histogram","values":[
        {"labels":{"le":"+Inf","r":"a"},"value":1,"metricName":"h_bucket"},
        {"labels":{"le":0.5,"r":"a"},"value":1,"metricName":"h_bucket"},
        {"labels":{"r":"a"},"value":1,"metricName":"h_count"},
        {"labels":{"r":"a"},"value":0.2,"metricName":"h_sum"}]}]"#;
    let two = r#"[{"name":"h","help":"","type":"histogram","values":[
        {"labels":{"le":0.5,"r":"b"},"value":2,"metricName":"h_bucket"},
        {"labels":{"le":"+Inf","r":"b"},"value":2,"metricName":"h_bucket"},
        {"labels":{"r":"b"},"value":0.4,"metricName":"h_sum"},
        {"labels":{"r":"b"},"value":2,"metricName":"h_count"},
        {"labels":{"le":0.5,"r":"a"},"value":1,"metricName":"h_bucket"},
        {"labels":{"le":"+Inf","r":"a"},"value":1,"metricName":"h_bucket"},
        {"labels":{"r":"a"},"value":1,"metricName":"h_count"},
        {"labels":{"r":"a"},"value":0.2,"metricName":"h_sum"}]}]"#;
    let answers = [
        Answer {
            role: "app",
            id: 1,
            metrics: one.as_bytes(),
        },
        Answer {
            role: "app",
            id: 2,
            metrics: two.as_bytes(),
        },
    ];
    let text = merge(&answers, false).text;
    assert_eq!(
        lines(&text)[2..],
        [
            "h_bucket{le=\"0.5\",r=\"a\"} 2",
            "h_bucket{le=\"+Inf\",r=\"a\"} 2",
            "h_count{r=\"a\"} 2",
            "h_sum{r=\"a\"} 0.4",
            "h_bucket{le=\"0.5\",r=\"b\"} 2",
            "h_bucket{le=\"+Inf\",r=\"b\"} 2",
            "h_count{r=\"b\"} 2",
            "h_sum{r=\"b\"} 0.4",
        ]
    );
}

#[test]
fn leaves_out_what_cannot_be_written() {
    let bad = r#"[
        {"name":"egg_cluster_ready","help":"","type":"gauge","values":[{"value":1,"labels":{}}]},
        {"name":"egg_cluster_reforks_total","help":"","type":"gauge","values":[{"value":1,"labels":{}}]},
        {"name":"bad-name","help":"","type":"gauge","values":[{"value":1,"labels":{}}]},
        {"name":"bad_label","help":"","type":"gauge","values":[{"value":1,"labels":{"a-b":"x"}}]},
        {"name":"odd","help":"","type":"gauge","aggregator":"median","values":[{"value":1,"labels":{}}]},
        {"name":"nan","help":"a \"quoted\"\nhelp","type":"gauge","values":[{"value":null,"labels":{"v":"a\"b"}}]},
        {"name":"mystery","help":"","type":"whatever","values":[{"value":3,"labels":{}}]}
    ]"#;
    let answers = [
        Answer {
            role: "app",
            id: 1,
            metrics: bad.as_bytes(),
        },
        Answer {
            role: "app",
            id: 2,
            metrics: b"{not json",
        },
    ];
    let merged = merge(&answers, false);
    assert_eq!(merged.unreadable, 1);
    assert_eq!(
        lines(&merged.text),
        [
            "# HELP nan a \\\"quoted\\\"\\nhelp",
            "# TYPE nan gauge",
            "nan{v=\"a\\\"b\"} NaN",
            "# HELP mystery ",
            "# TYPE mystery unknown",
            "mystery 3",
        ]
    );
}
