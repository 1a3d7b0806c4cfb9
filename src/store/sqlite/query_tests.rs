//! How SQLite runs ListJobs: a label filter must read that label's rows, not every job,
//! a schedule filter that schedule's jobs, and a plain list only its namespace's jobs.

use rusqlite::Connection;

use super::SqliteStore;

fn plan(
    conn: &Connection,
    sql: &str,
    label: Option<(&str, &str)>,
    schedule: Option<&str>,
) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("prepare");
    let nulls = rusqlite::params![
        None::<Vec<u8>>,
        None::<String>,
        None::<String>,
        None::<String>,
        label.map(|(k, _)| k),
        label.map(|(_, v)| v),
        "default",
        schedule
    ];
    let rows = stmt
        .query_map(nulls, |r| r.get::<_, String>(3))
        .expect("plan");
    rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("; ")
}

#[tokio::test]
async fn a_label_filter_searches_the_label_index_instead_of_scanning_every_job() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let conn = Connection::open(dir.path().join(super::DB_FILE)).expect("open");
    let by_label = plan(
        &conn,
        &super::list_sql(super::ListBy::Label),
        Some(("team", "a")),
        None,
    );
    assert!(by_label.contains("SEARCH job_labels"), "{by_label}");
    assert!(!by_label.contains("SCAN"), "{by_label}");
    assert!(
        !by_label.contains("TEMP B-TREE"),
        "sorted by the index: {by_label}"
    );
    drop(conn);
    crate::store::Store::close(&store).await;
}

#[tokio::test]
async fn a_plain_list_walks_its_namespace_in_id_order() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let conn = Connection::open(dir.path().join(super::DB_FILE)).expect("open");
    let plain = plan(
        &conn,
        &super::list_sql(super::ListBy::Namespace),
        None,
        None,
    );
    assert!(plain.contains("jobs_by_namespace"), "{plain}");
    assert!(
        !plain.contains("TEMP B-TREE"),
        "sorted by the index: {plain}"
    );
    drop(conn);
    crate::store::Store::close(&store).await;
}

#[tokio::test]
async fn a_schedule_filter_searches_the_schedule_index() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    let conn = Connection::open(dir.path().join(super::DB_FILE)).expect("open");
    let sql = super::list_sql(super::ListBy::Schedule);
    let by_schedule = plan(&conn, &sql, None, Some("nightly"));
    assert!(by_schedule.contains("jobs_by_schedule"), "{by_schedule}");
    assert!(
        !by_schedule.contains("TEMP B-TREE"),
        "sorted by the index: {by_schedule}"
    );
    drop(conn);
    crate::store::Store::close(&store).await;
}
