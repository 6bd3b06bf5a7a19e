use super::*;

fn with_fields(n: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 1..n {
        req.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Up to `STACK_HEADERS` fields are parsed into stack slots, more into
/// a heap array: the limit holds exactly on both sides.
#[test]
fn field_limit_holds_on_the_stack_and_the_heap() {
    for limit in [1, 100, STACK_HEADERS, STACK_HEADERS + 1, 300] {
        let limits = Limits {
            fields: limit,
            ..Limits::default()
        };
        let mut spans = Vec::new();
        let head = parse_head(&with_fields(limit), &limits, &mut spans);
        assert!(matches!(head, Ok(Some(_))), "{limit}: {head:?}");
        assert_eq!(spans.len(), limit);
        let over = parse_head(&with_fields(limit + 1), &limits, &mut spans);
        assert_eq!(over.map_err(|e| e.status), Err(431), "{limit} + 1");
    }
}
