//! Typed values of `struct tcp_info`'s enumerations and bit sets.

use std::fmt;

/// The TCP connection state (`tcpi_state`, the kernel's `TCP_*` states of
/// `include/net/tcp_states.h`).
///
/// A value this crate does not know is kept as [`TcpState::Unknown`], so
/// decoding never fails on a newer kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// `TCP_ESTABLISHED` (1).
    Established,
    /// `TCP_SYN_SENT` (2).
    SynSent,
    /// `TCP_SYN_RECV` (3).
    SynRecv,
    /// `TCP_FIN_WAIT1` (4).
    FinWait1,
    /// `TCP_FIN_WAIT2` (5).
    FinWait2,
    /// `TCP_TIME_WAIT` (6).
    TimeWait,
    /// `TCP_CLOSE` (7): closed, or a socket not yet connected nor listening.
    Close,
    /// `TCP_CLOSE_WAIT` (8).
    CloseWait,
    /// `TCP_LAST_ACK` (9).
    LastAck,
    /// `TCP_LISTEN` (10).
    Listen,
    /// `TCP_CLOSING` (11).
    Closing,
    /// `TCP_NEW_SYN_RECV` (12).
    NewSynRecv,
    /// `TCP_BOUND_INACTIVE` (13), a pseudo-state of bound, inactive sockets.
    BoundInactive,
    /// Any other value.
    Unknown(u8),
}

impl TcpState {
    /// Decodes the kernel's number.
    pub fn from_raw(raw: u8) -> TcpState {
        match raw {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            12 => TcpState::NewSynRecv,
            13 => TcpState::BoundInactive,
            other => TcpState::Unknown(other),
        }
    }

    /// The kernel's name without the `TCP_` prefix, as `ss` and
    /// `/proc/net/tcp` readers know it (`"ESTABLISHED"`, `"LISTEN"`, ...);
    /// `"UNKNOWN"` for a value this crate does not know.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
            TcpState::BoundInactive => "BOUND_INACTIVE",
            TcpState::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpState::Unknown(raw) => write!(f, "UNKNOWN({raw})"),
            known => f.write_str(known.name()),
        }
    }
}

/// The sender's congestion-avoidance state (`tcpi_ca_state`, the kernel's
/// `enum tcp_ca_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaState {
    /// `TCP_CA_Open` (0): nothing bad observed recently.
    Open,
    /// `TCP_CA_Disorder` (1): duplicate ACKs or SACKs seen.
    Disorder,
    /// `TCP_CA_CWR` (2): congestion window reduced (ECN or local congestion).
    Cwr,
    /// `TCP_CA_Recovery` (3): fast retransmit.
    Recovery,
    /// `TCP_CA_Loss` (4): recovery after a retransmission timeout.
    Loss,
    /// Any other value.
    Unknown(u8),
}

impl CaState {
    /// Decodes the kernel's number.
    pub fn from_raw(raw: u8) -> CaState {
        match raw {
            0 => CaState::Open,
            1 => CaState::Disorder,
            2 => CaState::Cwr,
            3 => CaState::Recovery,
            4 => CaState::Loss,
            other => CaState::Unknown(other),
        }
    }
}

/// Why a TCP Fast Open client attempt failed (`tcpi_fastopen_client_fail`,
/// the kernel's `enum tcp_fastopen_client_fail`; a 2-bit field, so every
/// value has a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FastOpenClientFail {
    /// `TFO_STATUS_UNSPEC` (0): no failure recorded (or not a TFO client).
    Unspecified,
    /// `TFO_COOKIE_UNAVAILABLE` (1).
    CookieUnavailable,
    /// `TFO_DATA_NOT_ACKED` (2): the SYN-ACK did not acknowledge the SYN's data.
    DataNotAcked,
    /// `TFO_SYN_RETRANSMITTED` (3): the SYN's data was not acknowledged after a timeout.
    SynRetransmitted,
}

impl FastOpenClientFail {
    /// Decodes the low two bits of `raw`.
    pub fn from_raw(raw: u8) -> FastOpenClientFail {
        match raw & 0b11 {
            0 => FastOpenClientFail::Unspecified,
            1 => FastOpenClientFail::CookieUnavailable,
            2 => FastOpenClientFail::DataNotAcked,
            _ => FastOpenClientFail::SynRetransmitted,
        }
    }
}

/// Which ECN variant the connection negotiated (`tcpi_ecn_mode`, the
/// kernel's `TCPI_ECN_MODE_*`; a 2-bit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcnMode {
    /// `TCPI_ECN_MODE_DISABLED` (0).
    Disabled,
    /// `TCPI_ECN_MODE_RFC3168` (1): classic ECN.
    Rfc3168,
    /// `TCPI_ECN_MODE_ACCECN` (2): Accurate ECN.
    AccEcn,
    /// `TCPI_ECN_MODE_PENDING` (3): negotiation not finished.
    Pending,
}

impl EcnMode {
    /// Decodes the low two bits of `raw`.
    pub fn from_raw(raw: u8) -> EcnMode {
        match raw & 0b11 {
            0 => EcnMode::Disabled,
            1 => EcnMode::Rfc3168,
            2 => EcnMode::AccEcn,
            _ => EcnMode::Pending,
        }
    }
}

/// What the connection has seen of the Accurate ECN TCP option
/// (`tcpi_accecn_opt_seen`, the kernel's `TCP_ACCECN_OPT_*`; a 2-bit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccEcnOptSeen {
    /// `TCP_ACCECN_OPT_NOT_SEEN` (0).
    NotSeen,
    /// `TCP_ACCECN_OPT_EMPTY_SEEN` (1).
    EmptySeen,
    /// `TCP_ACCECN_OPT_COUNTER_SEEN` (2).
    CounterSeen,
    /// `TCP_ACCECN_OPT_FAIL_SEEN` (3).
    FailSeen,
}

impl AccEcnOptSeen {
    /// Decodes the low two bits of `raw`.
    pub fn from_raw(raw: u8) -> AccEcnOptSeen {
        match raw & 0b11 {
            0 => AccEcnOptSeen::NotSeen,
            1 => AccEcnOptSeen::EmptySeen,
            2 => AccEcnOptSeen::CounterSeen,
            _ => AccEcnOptSeen::FailSeen,
        }
    }
}

/// Writes the names of the set bits of a flag set, `A | B`, then any
/// unnamed rest in hex.
fn fmt_flags(
    f: &mut fmt::Formatter<'_>,
    type_name: &str,
    bits: u8,
    names: &[(u8, &str)],
) -> fmt::Result {
    write!(f, "{type_name}(")?;
    let mut rest = bits;
    let mut first = true;
    for &(bit, name) in names {
        if bits & bit != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            f.write_str(name)?;
            first = false;
            rest &= !bit;
        }
    }
    if rest != 0 {
        if !first {
            f.write_str(" | ")?;
        }
        write!(f, "{rest:#04x}")?;
        first = false;
    }
    if first {
        f.write_str("empty")?;
    }
    f.write_str(")")
}

/// The TCP options the connection uses (`tcpi_options`, the kernel's
/// `TCPI_OPT_*` bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpOptions(u8);

impl TcpOptions {
    /// `TCPI_OPT_TIMESTAMPS`: TCP timestamps are on.
    pub const TIMESTAMPS: TcpOptions = TcpOptions(1);
    /// `TCPI_OPT_SACK`: selective acknowledgments are on.
    pub const SACK: TcpOptions = TcpOptions(2);
    /// `TCPI_OPT_WSCALE`: window scaling is on (see `snd_wscale`, `rcv_wscale`).
    pub const WSCALE: TcpOptions = TcpOptions(4);
    /// `TCPI_OPT_ECN`: ECN was negotiated at connection setup.
    pub const ECN: TcpOptions = TcpOptions(8);
    /// `TCPI_OPT_ECN_SEEN`: at least one packet with ECT was received.
    pub const ECN_SEEN: TcpOptions = TcpOptions(16);
    /// `TCPI_OPT_SYN_DATA`: the SYN-ACK acknowledged data sent or received in the SYN.
    pub const SYN_DATA: TcpOptions = TcpOptions(32);
    /// `TCPI_OPT_USEC_TS`: microsecond timestamps.
    pub const USEC_TS: TcpOptions = TcpOptions(64);
    /// `TCPI_OPT_ECN_LOW`: low-latency ECN configured at setup.
    pub const ECN_LOW: TcpOptions = TcpOptions(128);

    const NAMES: [(u8, &'static str); 8] = [
        (1, "TIMESTAMPS"),
        (2, "SACK"),
        (4, "WSCALE"),
        (8, "ECN"),
        (16, "ECN_SEEN"),
        (32, "SYN_DATA"),
        (64, "USEC_TS"),
        (128, "ECN_LOW"),
    ];

    /// Wraps the kernel's bits as they are.
    pub const fn from_bits(bits: u8) -> TcpOptions {
        TcpOptions(bits)
    }

    /// The kernel's bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: TcpOptions) -> bool {
        self.0 & other.0 == other.0
    }
}

impl fmt::Debug for TcpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_flags(f, "TcpOptions", self.0, &Self::NAMES)
    }
}

/// Which Accurate ECN checks failed (`tcpi_accecn_fail_mode`, the kernel's
/// `TCP_ACCECN_*_FAIL_*` bits; a 4-bit field).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccEcnFailMode(u8);

impl AccEcnFailMode {
    /// `TCP_ACCECN_ACE_FAIL_SEND`.
    pub const ACE_FAIL_SEND: AccEcnFailMode = AccEcnFailMode(1);
    /// `TCP_ACCECN_ACE_FAIL_RECV`.
    pub const ACE_FAIL_RECV: AccEcnFailMode = AccEcnFailMode(2);
    /// `TCP_ACCECN_OPT_FAIL_SEND`.
    pub const OPT_FAIL_SEND: AccEcnFailMode = AccEcnFailMode(4);
    /// `TCP_ACCECN_OPT_FAIL_RECV`.
    pub const OPT_FAIL_RECV: AccEcnFailMode = AccEcnFailMode(8);

    const NAMES: [(u8, &'static str); 4] = [
        (1, "ACE_FAIL_SEND"),
        (2, "ACE_FAIL_RECV"),
        (4, "OPT_FAIL_SEND"),
        (8, "OPT_FAIL_RECV"),
    ];

    /// Wraps the kernel's bits as they are.
    pub const fn from_bits(bits: u8) -> AccEcnFailMode {
        AccEcnFailMode(bits)
    }

    /// The kernel's bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: AccEcnFailMode) -> bool {
        self.0 & other.0 == other.0
    }
}

impl fmt::Debug for AccEcnFailMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_flags(f, "AccEcnFailMode", self.0, &Self::NAMES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_number_round_trips_through_its_name() {
        for raw in 0..=u8::MAX {
            let state = TcpState::from_raw(raw);
            match state {
                TcpState::Unknown(n) => {
                    assert_eq!(n, raw);
                    assert!(raw == 0 || raw > 13, "{raw} should be known");
                    assert_eq!(state.to_string(), format!("UNKNOWN({raw})"));
                }
                known => assert!((1..=13).contains(&raw), "{raw} decoded as {known}"),
            }
        }
        assert_eq!(TcpState::from_raw(10).to_string(), "LISTEN");
        assert_eq!(TcpState::from_raw(1).to_string(), "ESTABLISHED");
    }

    #[test]
    fn options_debug_names_bits_and_keeps_unknown_ones() {
        let opts = TcpOptions::from_bits(1 | 2 | 4);
        assert!(opts.contains(TcpOptions::SACK));
        assert!(!opts.contains(TcpOptions::ECN));
        assert_eq!(
            format!("{opts:?}"),
            "TcpOptions(TIMESTAMPS | SACK | WSCALE)"
        );
        assert_eq!(format!("{:?}", TcpOptions::default()), "TcpOptions(empty)");
        assert_eq!(
            format!("{:?}", AccEcnFailMode::from_bits(0x12)),
            "AccEcnFailMode(ACE_FAIL_RECV | 0x10)"
        );
    }
}
