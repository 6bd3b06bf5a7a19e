//! Decoding captured and damaged `struct tcp_info` buffers: a pure function,
//! no sockets needed.

use std::time::Duration;

use ferrocorn_tcpinfo::{CaState, EcnMode, TcpInfo, TcpOptions, TcpState};

/// `getsockopt(TCP_INFO)` of the client side of an idle 127.0.0.1
/// connection, captured on Linux 6.18 (x86_64, so little-endian) after the
/// client sent 1000 bytes and received 3000. `ss -tinoe` printed for the
/// same socket right after:
///
/// ```text
/// ESTAB ts sack bbr wscale:10,10 rto:204 rtt:0.038/0.021 ato:40 mss:35328
/// pmtu:65535 rcvmss:3000 advmss:65483 cwnd:11 bytes_sent:1000
/// bytes_acked:1001 bytes_received:3000 segs_out:4 segs_in:3 data_segs_out:1
/// data_segs_in:1 lastsnd:312 lastrcv:312 lastack:312
/// pacing_rate 178226499864bps delivery_rate 16624941176bps delivered:2
/// app_limited rcv_space:65495 rcv_ssthresh:99406 minrtt:0.017 snd_wnd:70656
/// ```
///
/// The expected values below are ss's (an independent decoder, iproute2),
/// not this crate's output, except where a comment says ss does not print
/// the field.
const CAPTURED_6_18: &str = concat!(
    "010000000007aa01e01c0300409c0000008a0000b80b00000000000000000000",
    "0000000000000000000000002c010000000000002c0100002c010000ffff0000",
    "4e8401002600000015000000ffffff7f0b000000cbff00000300000000000000",
    "d7ff0000000000002312e42f05000000ffffffffffffffffe903000000000000",
    "b80b000000000000040000000300000000000000110000000100000001000000",
    "0f8fdd7b00000000000000000000000000000000000000000000000000000000",
    "0200000000000000e80300000000000000000000000000000000000000000000",
    "0000000000140100008801000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000",
);

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[test]
#[cfg(target_endian = "little")]
fn captured_buffer_decodes_to_what_ss_printed() {
    let bytes = hex(CAPTURED_6_18);
    assert_eq!(bytes.len(), 280);
    let info = TcpInfo::from_bytes(&bytes);

    assert_eq!(info.len, 280);
    assert_eq!(info.state, Some(TcpState::Established));
    assert_eq!(info.ca_state, Some(CaState::Open));
    let options = info.options.expect("options");
    for (flag, name) in [
        (TcpOptions::TIMESTAMPS, "ts"),
        (TcpOptions::SACK, "sack"),
        (TcpOptions::WSCALE, "wscale"),
    ] {
        assert!(options.contains(flag), "{name} missing from {options:?}");
    }
    assert!(!options.contains(TcpOptions::ECN));
    assert_eq!(info.snd_wscale, Some(10));
    assert_eq!(info.rcv_wscale, Some(10));
    assert_eq!(info.delivery_rate_app_limited, Some(true));
    assert_eq!(info.rto, Some(Duration::from_millis(204)));
    assert_eq!(info.ato, Some(Duration::from_millis(40)));
    assert_eq!(info.snd_mss, Some(35328));
    assert_eq!(info.rcv_mss, Some(3000));
    // Elapsed times: the buffer was read 12 ms before ss read its 312.
    assert_eq!(info.last_data_sent, Some(Duration::from_millis(300)));
    assert_eq!(info.last_data_recv, Some(Duration::from_millis(300)));
    assert_eq!(info.last_ack_recv, Some(Duration::from_millis(300)));
    assert_eq!(info.pmtu, Some(65535));
    assert_eq!(info.rcv_ssthresh, Some(99406));
    assert_eq!(info.rtt, Some(Duration::from_micros(38)));
    assert_eq!(info.rttvar, Some(Duration::from_micros(21)));
    assert_eq!(info.snd_ssthresh, Some(0x7fff_ffff)); // infinite: ss omits it
    assert_eq!(info.snd_cwnd, Some(11));
    assert_eq!(info.advmss, Some(65483));
    assert_eq!(info.rcv_space, Some(65495));
    assert_eq!(info.total_retrans, Some(0));
    // ss prints rates in bits per second; the kernel counts bytes.
    assert_eq!(info.pacing_rate.map(|r| r * 8), Some(178_226_499_864));
    assert_eq!(info.max_pacing_rate, Some(u64::MAX)); // unlimited: ss omits it
    assert_eq!(info.bytes_acked, Some(1001));
    assert_eq!(info.bytes_received, Some(3000));
    assert_eq!(info.segs_out, Some(4));
    assert_eq!(info.segs_in, Some(3));
    assert_eq!(info.notsent_bytes, Some(0));
    assert_eq!(info.min_rtt, Some(Duration::from_micros(17)));
    assert_eq!(info.data_segs_in, Some(1));
    assert_eq!(info.data_segs_out, Some(1));
    // ss: 16624941176 bps, from bytes * 8 (rounded through a double).
    assert_eq!(info.delivery_rate, Some(2_078_117_647));
    assert_eq!(info.delivered, Some(2));
    assert_eq!(info.delivered_ce, Some(0));
    assert_eq!(info.bytes_sent, Some(1000));
    assert_eq!(info.bytes_retrans, Some(0));
    assert_eq!(info.snd_wnd, Some(70656));
    assert_eq!(info.rcv_wnd, Some(100_352)); // not printed by ss
    assert_eq!(info.total_rto, Some(0));
    assert_eq!(info.total_rto_recoveries, Some(0));
    assert_eq!(info.total_rto_time, Some(Duration::ZERO));
    assert_eq!(info.received_ce, Some(0));
    assert_eq!(info.received_ce_bytes, Some(0));
    assert_eq!(info.ecn_mode, Some(EcnMode::Disabled));
    assert_eq!(info.options2, Some(0));
    assert_eq!(info.listen_queue(), None);
}

#[test]
fn short_buffer_fills_only_what_fits() {
    let bytes = hex(CAPTURED_6_18);

    // A Linux 2.6-era struct ended after tcpi_total_retrans (104 bytes).
    let old = TcpInfo::from_bytes(&bytes[..104]);
    assert_eq!(old.len, 104);
    assert_eq!(old.state, Some(TcpState::Established));
    assert!(old.total_retrans.is_some());
    assert_eq!(old.pacing_rate, None);
    assert_eq!(old.snd_wnd, None);
    assert_eq!(old.total_rto_time, None);

    // Linux 6.7 to 6.17 end after tcpi_total_rto_time (248 bytes).
    let before_accecn = TcpInfo::from_bytes(&bytes[..248]);
    assert!(before_accecn.total_rto_time.is_some());
    assert!(before_accecn.rcv_wnd.is_some());
    assert_eq!(before_accecn.received_ce, None);
    assert_eq!(before_accecn.ecn_mode, None);
    assert_eq!(before_accecn.options2, None);

    // Cut in the middle of a u64: that field is unknown, the one before known.
    let cut = TcpInfo::from_bytes(&bytes[..110]);
    assert!(cut.total_retrans.is_some());
    assert_eq!(cut.pacing_rate, None);

    // Each prefix knows a superset of the fields of the shorter ones.
    let mut known_before = 0;
    for n in 0..=bytes.len() {
        let info = TcpInfo::from_bytes(&bytes[..n]);
        let known = format!("{info:?}").matches("Some(").count();
        assert!(
            known >= known_before,
            "{n} bytes: {known} fields < {known_before}"
        );
        known_before = known;
    }
}

#[test]
fn empty_buffer_knows_nothing() {
    let info = TcpInfo::from_bytes(&[]);
    assert_eq!(info.len, 0);
    assert_eq!(info.state, None);
    assert_eq!(info.rtt, None);
    assert!(!format!("{info:?}").contains("Some("), "{info:?}");
    assert_eq!(info.listen_queue(), None);
}

#[test]
fn longer_buffer_than_ours_is_fine() {
    let mut bytes = hex(CAPTURED_6_18);
    bytes.resize(400, 0xee); // a future kernel's extra fields
    let info = TcpInfo::from_bytes(&bytes);
    assert_eq!(info.len, 400);
    let mut same = info.clone();
    same.len = 280;
    assert_eq!(same, TcpInfo::from_bytes(&bytes[..280]));
}

#[test]
fn garbage_never_panics() {
    // xorshift64*: deterministic bytes, no dependency.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut unknown_states = 0;
    for round in 0..2000 {
        let len = usize::try_from(next() % 600).unwrap();
        let bytes: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        let info = TcpInfo::from_bytes(&bytes);
        assert_eq!(info.len, len, "round {round}");
        if let Some(TcpState::Unknown(_)) = info.state {
            unknown_states += 1;
        }
        if let Some(w) = info.snd_wscale {
            assert!(w < 16);
        }
        if let Some(bits) = info.options2 {
            assert!(bits < 1 << 24);
        }
        // Display and Debug of anything decoded work too.
        let _ = format!(
            "{info:?} {}",
            info.state.map(|s| s.to_string()).unwrap_or_default()
        );
    }
    assert!(
        unknown_states > 0,
        "random states should include unknown ones"
    );

    let all_ones = TcpInfo::from_bytes(&[0xff; 280]);
    assert_eq!(all_ones.state, Some(TcpState::Unknown(255)));
    assert_eq!(all_ones.ca_state, Some(CaState::Unknown(255)));
    assert_eq!(
        all_ones.rtt,
        Some(Duration::from_micros(u64::from(u32::MAX)))
    );
    assert_eq!(all_ones.busy_time, Some(Duration::from_micros(u64::MAX)));
    assert_eq!(all_ones.options2, Some(0xff_ffff));
}
