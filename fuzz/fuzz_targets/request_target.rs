//! The request target Gatehouse routes on and forwards. Properties, for any target:
//! normalising is idempotent, a normalised path carries only URI characters, and the route
//! chosen for the request is the route chosen again for what the upstream receives.
#![no_main]
use gatehouse_routing::{
    normalize_path, normalize_path_keeping_encoded_slashes, normalize_query, select,
    split_target, RouteKey, RouteRequest,
};
use libfuzzer_sys::fuzz_target;

fn routes() -> Vec<RouteKey> {
    let mut keys = vec![
        RouteKey::new(None, None, "/admin/", false, false),
        RouteKey::new(None, None, "/public/", false, false),
        RouteKey::new(None, None, "/Api/v2/", true, false),
        RouteKey::new(None, None, "/files/", false, true),
        RouteKey::new(None, None, "/a/b/", false, false),
        RouteKey::new(None, None, "/", false, false),
    ];
    keys.sort_by(RouteKey::specificity);
    keys
}

fn route(keys: &[RouteKey], raw: &[u8], merge: bool) -> Option<usize> {
    let path = normalize_path(raw, merge).ok();
    let kept = normalize_path_keeping_encoded_slashes(raw, merge).ok();
    let req = RouteRequest {
        listener: None,
        host: None,
        path: path.as_deref(),
        path_with_encoded_slashes: kept.as_deref(),
    };
    select(keys, |k| k, &req).map(|(i, _)| i)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, target)) = data.split_first() else {
        return;
    };
    let merge = flags & 1 == 1;
    let Ok(split) = split_target(target) else {
        return;
    };
    if let Some(q) = split.query {
        let q1 = normalize_query(q);
        assert_eq!(normalize_query(q1.as_bytes()), q1);
    }
    let keys = routes();
    let chosen = route(&keys, split.path, merge);
    let Ok(once) = normalize_path(split.path, merge) else {
        // refused: only a raw route may have taken it
        assert!(chosen.is_none_or(|i| keys[i].raw_path));
        return;
    };
    assert!(once.starts_with('/'));
    assert!(once.bytes().all(|b| b.is_ascii_graphic()), "{once:?}");
    let twice = normalize_path(once.as_bytes(), merge).expect("a normalised path normalises");
    assert_eq!(once, twice);
    for seg in once.split('/') {
        assert!(seg != "." && seg != "..", "{once:?}");
    }
    // what the upstream receives (the normalised path on normalised routes, the bytes as
    // received on raw ones) is routed the same way
    let forwarded: &[u8] = match chosen {
        Some(i) if keys[i].raw_path => split.path,
        _ => once.as_bytes(),
    };
    assert_eq!(route(&keys, forwarded, merge), chosen, "{once:?}");
});
