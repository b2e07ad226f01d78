//! Values round-trip through a real PostgREST (the local stack's): run with
//! `SUPABASE_URL`/`SUPABASE_SERVICE_ROLE_KEY` set (`source $STATE_DIR/env`):
//! `cargo test -p edgeworks-db --test live_postgrest -- --ignored`.

use edgeworks_db::Db;
use edgeworks_testkit::{block_on, NativeClient};
use serde_json::{json, Value};

const VALUES: &[&str] = &[
    "a b,c(d)'e\"f&g=h#i%j+k/l?m;n:o@p~q*r-s.t_u\\v",
    "plus+and%2B and %zz and %",
    "&description=eq.x",
    "1)&or=(name.neq.z",
    "ünïcödé 中文 🎉 \u{e9}",
    "tab\tcr\rlf\nsoh\u{1}del\u{7f}",
    "  leading and trailing  ",
    "eq.nested",
    "in.(1,2)",
    "a=b=c",
];

#[test]
#[ignore = "needs a running stack: SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"]
fn values_round_trip_through_postgrest() {
    let url = std::env::var("SUPABASE_URL").expect("SUPABASE_URL");
    let key = std::env::var("SUPABASE_SERVICE_ROLE_KEY").expect("SUPABASE_SERVICE_ROLE_KEY");
    let db = Db::new(NativeClient, &format!("{url}/rest/v1"), &key, &key);
    for (i, v) in VALUES.iter().enumerate() {
        let name = format!("h7_encoding_{i}");
        let _: Value = block_on(db.execute(db.from("feature_flags").eq("name", &name).delete())).unwrap();
        let row = json!({ "name": name, "description": v });
        let ins: Vec<Value> = block_on(
            db.execute(
                db.from("feature_flags")
                    .insert(row.to_string())
                    .select("name,description"),
            ),
        )
        .unwrap();
        assert_eq!(ins[0]["description"], *v);
        let got: Vec<Value> = block_on(
            db.execute(
                db.from("feature_flags")
                    .select("name,description")
                    .eq("description", v)
                    .neq("name", format!("{name}x"))
                    .in_("name", [name.as_str(), "other"]),
            ),
        )
        .unwrap();
        assert_eq!(got.len(), 1, "{v:?}: {got:?}");
        assert_eq!(got[0]["name"], name.as_str(), "{v:?}");
        assert_eq!(got[0]["description"], *v, "{v:?}");
        let none: Vec<Value> = block_on(
            db.execute(
                db.from("feature_flags")
                    .select("name")
                    .eq("description", format!("{v}x")),
            ),
        )
        .unwrap();
        assert!(none.is_empty(), "{v:?}");
        let upd: Vec<Value> = block_on(
            db.execute(
                db.from("feature_flags")
                    .eq("description", v)
                    .update(json!({ "is_enabled": false }).to_string())
                    .select("name"),
            ),
        )
        .unwrap();
        assert_eq!(upd.len(), 1, "{v:?}");
        let del: Vec<Value> = block_on(db.execute(db.from("feature_flags").eq("description", v).delete())).unwrap();
        assert_eq!(del.len(), 1, "{v:?}");
    }
}
