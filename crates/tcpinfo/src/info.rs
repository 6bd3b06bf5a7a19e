//! `struct tcp_info` decoded from the bytes the kernel returned.

use std::time::Duration;

use crate::ListenQueue;
use crate::types::{
    AccEcnFailMode, AccEcnOptSeen, CaState, EcnMode, FastOpenClientFail, TcpOptions, TcpState,
};

/// Byte offsets of the fields of `struct tcp_info` (include/uapi/linux/tcp.h).
/// The layout only ever grows at the end, so an offset never changes.
mod off {
    pub const STATE: usize = 0;
    pub const CA_STATE: usize = 1;
    pub const RETRANSMITS: usize = 2;
    pub const PROBES: usize = 3;
    pub const BACKOFF: usize = 4;
    pub const OPTIONS: usize = 5;
    /// `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4`.
    pub const WSCALE: usize = 6;
    /// `tcpi_delivery_rate_app_limited:1, tcpi_fastopen_client_fail:2`.
    pub const APP_LIMITED_TFO: usize = 7;
    pub const RTO: usize = 8;
    pub const ATO: usize = 12;
    pub const SND_MSS: usize = 16;
    pub const RCV_MSS: usize = 20;
    pub const UNACKED: usize = 24;
    pub const SACKED: usize = 28;
    pub const LOST: usize = 32;
    pub const RETRANS: usize = 36;
    pub const FACKETS: usize = 40;
    pub const LAST_DATA_SENT: usize = 44;
    pub const LAST_ACK_SENT: usize = 48;
    pub const LAST_DATA_RECV: usize = 52;
    pub const LAST_ACK_RECV: usize = 56;
    pub const PMTU: usize = 60;
    pub const RCV_SSTHRESH: usize = 64;
    pub const RTT: usize = 68;
    pub const RTTVAR: usize = 72;
    pub const SND_SSTHRESH: usize = 76;
    pub const SND_CWND: usize = 80;
    pub const ADVMSS: usize = 84;
    pub const REORDERING: usize = 88;
    pub const RCV_RTT: usize = 92;
    pub const RCV_SPACE: usize = 96;
    pub const TOTAL_RETRANS: usize = 100;
    pub const PACING_RATE: usize = 104;
    pub const MAX_PACING_RATE: usize = 112;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const SEGS_OUT: usize = 136;
    pub const SEGS_IN: usize = 140;
    pub const NOTSENT_BYTES: usize = 144;
    pub const MIN_RTT: usize = 148;
    pub const DATA_SEGS_IN: usize = 152;
    pub const DATA_SEGS_OUT: usize = 156;
    pub const DELIVERY_RATE: usize = 160;
    pub const BUSY_TIME: usize = 168;
    pub const RWND_LIMITED: usize = 176;
    pub const SNDBUF_LIMITED: usize = 184;
    pub const DELIVERED: usize = 192;
    pub const DELIVERED_CE: usize = 196;
    pub const BYTES_SENT: usize = 200;
    pub const BYTES_RETRANS: usize = 208;
    pub const DSACK_DUPS: usize = 216;
    pub const REORD_SEEN: usize = 220;
    pub const RCV_OOOPACK: usize = 224;
    pub const SND_WND: usize = 228;
    pub const RCV_WND: usize = 232;
    pub const REHASH: usize = 236;
    pub const TOTAL_RTO: usize = 240;
    pub const TOTAL_RTO_RECOVERIES: usize = 242;
    pub const TOTAL_RTO_TIME: usize = 244;
    pub const RECEIVED_CE: usize = 248;
    pub const DELIVERED_E1_BYTES: usize = 252;
    pub const DELIVERED_E0_BYTES: usize = 256;
    pub const DELIVERED_CE_BYTES: usize = 260;
    pub const RECEIVED_E1_BYTES: usize = 264;
    pub const RECEIVED_E0_BYTES: usize = 268;
    pub const RECEIVED_CE_BYTES: usize = 272;
    /// `tcpi_ecn_mode:2, tcpi_accecn_opt_seen:2, tcpi_accecn_fail_mode:4, tcpi_options2:24`.
    pub const ECN_BITS: usize = 276;
    /// One past the last byte this crate knows.
    pub const END: usize = 280;
}

/// Reads fixed-width native-endian integers at offsets, `None` past the end.
#[derive(Clone, Copy)]
pub(crate) struct Raw<'a>(pub(crate) &'a [u8]);

impl Raw<'_> {
    fn array<const N: usize>(self, at: usize) -> Option<[u8; N]> {
        let end = at.checked_add(N)?;
        self.0.get(at..end)?.try_into().ok()
    }

    pub(crate) fn u8(self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }

    fn u16(self, at: usize) -> Option<u16> {
        self.array(at).map(u16::from_ne_bytes)
    }

    pub(crate) fn u32(self, at: usize) -> Option<u32> {
        self.array(at).map(u32::from_ne_bytes)
    }

    fn u64(self, at: usize) -> Option<u64> {
        self.array(at).map(u64::from_ne_bytes)
    }

    fn micros(self, at: usize) -> Option<Duration> {
        self.u32(at).map(|us| Duration::from_micros(u64::from(us)))
    }

    fn micros64(self, at: usize) -> Option<Duration> {
        self.u64(at).map(Duration::from_micros)
    }

    fn millis(self, at: usize) -> Option<Duration> {
        self.u32(at).map(|ms| Duration::from_millis(u64::from(ms)))
    }
}

/// Extracts a C bit-field: `width` bits declared `offset` bits into a
/// `unit_bits`-wide storage unit. GCC allocates bit-fields from the least
/// significant bit on little-endian targets and from the most significant
/// bit on big-endian ones.
fn bitfield(unit: u32, unit_bits: u32, offset: u32, width: u32) -> u32 {
    let shift = if cfg!(target_endian = "little") {
        offset
    } else {
        unit_bits - offset - width
    };
    (unit >> shift) & ((1 << width) - 1)
}

/// Narrows a bit-field of at most 8 bits.
fn small(value: u32) -> u8 {
    u8::try_from(value).unwrap_or(u8::MAX)
}

/// Every field of Linux's `struct tcp_info`, as the kernel filled it.
///
/// Each field is `None` when the kernel's struct ended before it (older
/// kernels return shorter structs), never a made-up zero. [`len`](Self::len)
/// says how many bytes the kernel returned; bytes past
/// [`TcpInfo::KNOWN_LEN`] belong to fields newer than this crate and are
/// ignored.
///
/// Names are the kernel's without the `tcpi_` prefix. Times are
/// [`Duration`]s (the kernel reports microseconds or milliseconds, as each
/// field says); sizes and counters keep the kernel's width. On a socket in
/// `LISTEN` state, [`unacked`](Self::unacked) and [`sacked`](Self::sacked)
/// mean something else: see [`TcpInfo::listen_queue`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpInfo {
    /// How many bytes of `struct tcp_info` the kernel returned. Larger than
    /// [`TcpInfo::KNOWN_LEN`] on a kernel newer than this crate.
    pub len: usize,

    /// Connection state (`tcpi_state`).
    pub state: Option<TcpState>,
    /// Congestion-avoidance state (`tcpi_ca_state`).
    pub ca_state: Option<CaState>,
    /// Retransmission-timer expirations for the current unacknowledged data
    /// (`tcpi_retransmits`).
    pub retransmits: Option<u8>,
    /// Unanswered zero-window or keepalive probes (`tcpi_probes`).
    pub probes: Option<u8>,
    /// Exponential backoff of the retransmission timer (`tcpi_backoff`).
    pub backoff: Option<u8>,
    /// Negotiated TCP options (`tcpi_options`).
    pub options: Option<TcpOptions>,
    /// Window scale the peer announced, applied to the windows it advertises
    /// (`tcpi_snd_wscale`, a shift of 0 to 14).
    pub snd_wscale: Option<u8>,
    /// Window scale we announced, applied to the windows we advertise
    /// (`tcpi_rcv_wscale`, a shift of 0 to 14).
    pub rcv_wscale: Option<u8>,
    /// Whether the last delivery-rate sample was limited by the application
    /// (`tcpi_delivery_rate_app_limited`).
    pub delivery_rate_app_limited: Option<bool>,
    /// Why a TCP Fast Open client attempt failed (`tcpi_fastopen_client_fail`).
    pub fastopen_client_fail: Option<FastOpenClientFail>,

    /// Retransmission timeout (`tcpi_rto`, microseconds).
    pub rto: Option<Duration>,
    /// Delayed-ACK timeout (`tcpi_ato`, microseconds).
    pub ato: Option<Duration>,
    /// Sending maximum segment size, bytes (`tcpi_snd_mss`).
    pub snd_mss: Option<u32>,
    /// Receiving MSS estimate, bytes (`tcpi_rcv_mss`).
    pub rcv_mss: Option<u32>,

    /// Segments sent and not yet acknowledged (`tcpi_unacked`). On a
    /// listening socket: connections waiting to be accepted.
    pub unacked: Option<u32>,
    /// Segments selectively acknowledged (`tcpi_sacked`). On a listening
    /// socket: the accept-queue limit (the backlog as the kernel clamped it).
    pub sacked: Option<u32>,
    /// Segments considered lost (`tcpi_lost`).
    pub lost: Option<u32>,
    /// Segments retransmitted and not yet acknowledged (`tcpi_retrans`).
    pub retrans: Option<u32>,
    /// Forward-acknowledged segments (`tcpi_fackets`; unused since Linux 4.15, always 0).
    pub fackets: Option<u32>,

    /// Time since data was last sent (`tcpi_last_data_sent`, milliseconds).
    pub last_data_sent: Option<Duration>,
    /// Time since an ACK was last sent (`tcpi_last_ack_sent`, milliseconds;
    /// the kernel does not track it and reports 0).
    pub last_ack_sent: Option<Duration>,
    /// Time since data was last received (`tcpi_last_data_recv`, milliseconds).
    pub last_data_recv: Option<Duration>,
    /// Time since an ACK was last received (`tcpi_last_ack_recv`, milliseconds).
    pub last_ack_recv: Option<Duration>,

    /// Path MTU, bytes (`tcpi_pmtu`).
    pub pmtu: Option<u32>,
    /// Receive slow-start threshold, bytes (`tcpi_rcv_ssthresh`).
    pub rcv_ssthresh: Option<u32>,
    /// Smoothed round-trip time (`tcpi_rtt`, microseconds).
    pub rtt: Option<Duration>,
    /// Round-trip time variation (`tcpi_rttvar`, microseconds).
    pub rttvar: Option<Duration>,
    /// Send slow-start threshold, segments (`tcpi_snd_ssthresh`;
    /// `0x7fffffff` means "infinite", slow start not yet left).
    pub snd_ssthresh: Option<u32>,
    /// Congestion window, segments (`tcpi_snd_cwnd`).
    pub snd_cwnd: Option<u32>,
    /// Advertised MSS, bytes (`tcpi_advmss`).
    pub advmss: Option<u32>,
    /// Reordering degree the sender tolerates, segments (`tcpi_reordering`).
    pub reordering: Option<u32>,

    /// Receiver-side RTT estimate (`tcpi_rcv_rtt`, microseconds).
    pub rcv_rtt: Option<Duration>,
    /// Receive-buffer autotuning space, bytes (`tcpi_rcv_space`).
    pub rcv_space: Option<u32>,

    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: Option<u32>,

    /// Pacing rate, bytes per second (`tcpi_pacing_rate`; `u64::MAX` = unlimited).
    pub pacing_rate: Option<u64>,
    /// Maximum pacing rate, bytes per second (`tcpi_max_pacing_rate`;
    /// `u64::MAX` = unlimited).
    pub max_pacing_rate: Option<u64>,
    /// Bytes acknowledged by the peer (`tcpi_bytes_acked`, RFC 4898
    /// tcpEStatsAppHCThruOctetsAcked; counts the SYN).
    pub bytes_acked: Option<u64>,
    /// Bytes received (`tcpi_bytes_received`, RFC 4898 tcpEStatsAppHCThruOctetsReceived).
    pub bytes_received: Option<u64>,
    /// Segments sent, including retransmissions (`tcpi_segs_out`).
    pub segs_out: Option<u32>,
    /// Segments received (`tcpi_segs_in`).
    pub segs_in: Option<u32>,

    /// Bytes queued but not yet sent (`tcpi_notsent_bytes`).
    pub notsent_bytes: Option<u32>,
    /// Minimum RTT observed (`tcpi_min_rtt`, microseconds; `u32::MAX`
    /// microseconds when there is no sample yet).
    pub min_rtt: Option<Duration>,
    /// Segments received carrying data (`tcpi_data_segs_in`).
    pub data_segs_in: Option<u32>,
    /// Segments sent carrying data (`tcpi_data_segs_out`).
    pub data_segs_out: Option<u32>,

    /// Most recent delivery-rate sample, bytes per second (`tcpi_delivery_rate`).
    pub delivery_rate: Option<u64>,

    /// Time busy sending data (`tcpi_busy_time`, microseconds).
    pub busy_time: Option<Duration>,
    /// Time limited by the peer's receive window (`tcpi_rwnd_limited`, microseconds).
    pub rwnd_limited: Option<Duration>,
    /// Time limited by the send buffer (`tcpi_sndbuf_limited`, microseconds).
    pub sndbuf_limited: Option<Duration>,

    /// Data segments delivered, including out of order (`tcpi_delivered`).
    pub delivered: Option<u32>,
    /// Delivered data segments that carried a CE mark (`tcpi_delivered_ce`).
    pub delivered_ce: Option<u32>,

    /// Data bytes sent, including retransmissions (`tcpi_bytes_sent`).
    pub bytes_sent: Option<u64>,
    /// Data bytes retransmitted (`tcpi_bytes_retrans`).
    pub bytes_retrans: Option<u64>,
    /// DSACK blocks received (`tcpi_dsack_dups`).
    pub dsack_dups: Option<u32>,
    /// Reordering events seen (`tcpi_reord_seen`).
    pub reord_seen: Option<u32>,

    /// Out-of-order packets received (`tcpi_rcv_ooopack`).
    pub rcv_ooopack: Option<u32>,

    /// Peer's advertised receive window after scaling, bytes (`tcpi_snd_wnd`).
    pub snd_wnd: Option<u32>,
    /// Local advertised receive window after scaling, bytes (`tcpi_rcv_wnd`).
    pub rcv_wnd: Option<u32>,

    /// Rehash attempts triggered by PLB or timeouts (`tcpi_rehash`).
    pub rehash: Option<u32>,

    /// Retransmission timeouts, including SYN/SYN-ACK and recurring ones
    /// (`tcpi_total_rto`).
    pub total_rto: Option<u16>,
    /// RTO recoveries, including an unfinished one (`tcpi_total_rto_recoveries`).
    pub total_rto_recoveries: Option<u16>,
    /// Time spent in RTO recoveries, including an unfinished one
    /// (`tcpi_total_rto_time`, milliseconds).
    pub total_rto_time: Option<Duration>,

    /// CE-marked segments received (`tcpi_received_ce`).
    pub received_ce: Option<u32>,
    /// Accurate ECN: bytes delivered with ECT(1) (`tcpi_delivered_e1_bytes`; 32 bits, wraps).
    pub delivered_e1_bytes: Option<u32>,
    /// Accurate ECN: bytes delivered with ECT(0) (`tcpi_delivered_e0_bytes`; wraps).
    pub delivered_e0_bytes: Option<u32>,
    /// Accurate ECN: bytes delivered with CE (`tcpi_delivered_ce_bytes`; wraps).
    pub delivered_ce_bytes: Option<u32>,
    /// Accurate ECN: bytes received with ECT(1) (`tcpi_received_e1_bytes`; wraps).
    pub received_e1_bytes: Option<u32>,
    /// Accurate ECN: bytes received with ECT(0) (`tcpi_received_e0_bytes`; wraps).
    pub received_e0_bytes: Option<u32>,
    /// Accurate ECN: bytes received with CE (`tcpi_received_ce_bytes`; wraps).
    pub received_ce_bytes: Option<u32>,
    /// Negotiated ECN variant (`tcpi_ecn_mode`).
    pub ecn_mode: Option<EcnMode>,
    /// Accurate ECN option seen (`tcpi_accecn_opt_seen`).
    pub accecn_opt_seen: Option<AccEcnOptSeen>,
    /// Accurate ECN failures (`tcpi_accecn_fail_mode`).
    pub accecn_fail_mode: Option<AccEcnFailMode>,
    /// Further option bits, reserved by the kernel for newer features
    /// (`tcpi_options2`, 24 bits, raw).
    pub options2: Option<u32>,
}

impl TcpInfo {
    /// The size of `struct tcp_info` this crate decodes in full, in bytes
    /// (Linux 6.18's, ending with the Accurate ECN fields).
    pub const KNOWN_LEN: usize = off::END;

    /// Decodes `struct tcp_info` from the bytes `getsockopt(TCP_INFO)`
    /// returned, in the kernel's (native) byte order.
    ///
    /// A pure function that never fails and never panics: a field that does
    /// not fit entirely in `bytes` is `None`; bytes past
    /// [`KNOWN_LEN`](Self::KNOWN_LEN) are ignored; any byte values decode
    /// (an unknown state becomes [`TcpState::Unknown`]).
    ///
    /// ```
    /// use ferrocorn_tcpinfo::{TcpInfo, TcpState};
    ///
    /// // A kernel that returned only the first 32 bytes (state ... sacked).
    /// let mut bytes = [0u8; 32];
    /// bytes[0] = 10; // TCP_LISTEN
    /// let info = TcpInfo::from_bytes(&bytes);
    /// assert_eq!(info.len, 32);
    /// assert_eq!(info.state, Some(TcpState::Listen));
    /// assert_eq!(info.sacked, Some(0));
    /// assert_eq!(info.lost, None); // not returned: unknown, not zero
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> TcpInfo {
        let r = Raw(bytes);
        let wscale = r.u8(off::WSCALE).map(u32::from);
        let app_tfo = r.u8(off::APP_LIMITED_TFO).map(u32::from);
        let ecn = r.u32(off::ECN_BITS);
        TcpInfo {
            len: bytes.len(),
            state: r.u8(off::STATE).map(TcpState::from_raw),
            ca_state: r.u8(off::CA_STATE).map(CaState::from_raw),
            retransmits: r.u8(off::RETRANSMITS),
            probes: r.u8(off::PROBES),
            backoff: r.u8(off::BACKOFF),
            options: r.u8(off::OPTIONS).map(TcpOptions::from_bits),
            snd_wscale: wscale.map(|b| small(bitfield(b, 8, 0, 4))),
            rcv_wscale: wscale.map(|b| small(bitfield(b, 8, 4, 4))),
            delivery_rate_app_limited: app_tfo.map(|b| bitfield(b, 8, 0, 1) == 1),
            fastopen_client_fail: app_tfo
                .map(|b| FastOpenClientFail::from_raw(small(bitfield(b, 8, 1, 2)))),
            rto: r.micros(off::RTO),
            ato: r.micros(off::ATO),
            snd_mss: r.u32(off::SND_MSS),
            rcv_mss: r.u32(off::RCV_MSS),
            unacked: r.u32(off::UNACKED),
            sacked: r.u32(off::SACKED),
            lost: r.u32(off::LOST),
            retrans: r.u32(off::RETRANS),
            fackets: r.u32(off::FACKETS),
            last_data_sent: r.millis(off::LAST_DATA_SENT),
            last_ack_sent: r.millis(off::LAST_ACK_SENT),
            last_data_recv: r.millis(off::LAST_DATA_RECV),
            last_ack_recv: r.millis(off::LAST_ACK_RECV),
            pmtu: r.u32(off::PMTU),
            rcv_ssthresh: r.u32(off::RCV_SSTHRESH),
            rtt: r.micros(off::RTT),
            rttvar: r.micros(off::RTTVAR),
            snd_ssthresh: r.u32(off::SND_SSTHRESH),
            snd_cwnd: r.u32(off::SND_CWND),
            advmss: r.u32(off::ADVMSS),
            reordering: r.u32(off::REORDERING),
            rcv_rtt: r.micros(off::RCV_RTT),
            rcv_space: r.u32(off::RCV_SPACE),
            total_retrans: r.u32(off::TOTAL_RETRANS),
            pacing_rate: r.u64(off::PACING_RATE),
            max_pacing_rate: r.u64(off::MAX_PACING_RATE),
            bytes_acked: r.u64(off::BYTES_ACKED),
            bytes_received: r.u64(off::BYTES_RECEIVED),
            segs_out: r.u32(off::SEGS_OUT),
            segs_in: r.u32(off::SEGS_IN),
            notsent_bytes: r.u32(off::NOTSENT_BYTES),
            min_rtt: r.micros(off::MIN_RTT),
            data_segs_in: r.u32(off::DATA_SEGS_IN),
            data_segs_out: r.u32(off::DATA_SEGS_OUT),
            delivery_rate: r.u64(off::DELIVERY_RATE),
            busy_time: r.micros64(off::BUSY_TIME),
            rwnd_limited: r.micros64(off::RWND_LIMITED),
            sndbuf_limited: r.micros64(off::SNDBUF_LIMITED),
            delivered: r.u32(off::DELIVERED),
            delivered_ce: r.u32(off::DELIVERED_CE),
            bytes_sent: r.u64(off::BYTES_SENT),
            bytes_retrans: r.u64(off::BYTES_RETRANS),
            dsack_dups: r.u32(off::DSACK_DUPS),
            reord_seen: r.u32(off::REORD_SEEN),
            rcv_ooopack: r.u32(off::RCV_OOOPACK),
            snd_wnd: r.u32(off::SND_WND),
            rcv_wnd: r.u32(off::RCV_WND),
            rehash: r.u32(off::REHASH),
            total_rto: r.u16(off::TOTAL_RTO),
            total_rto_recoveries: r.u16(off::TOTAL_RTO_RECOVERIES),
            total_rto_time: r.millis(off::TOTAL_RTO_TIME),
            received_ce: r.u32(off::RECEIVED_CE),
            delivered_e1_bytes: r.u32(off::DELIVERED_E1_BYTES),
            delivered_e0_bytes: r.u32(off::DELIVERED_E0_BYTES),
            delivered_ce_bytes: r.u32(off::DELIVERED_CE_BYTES),
            received_e1_bytes: r.u32(off::RECEIVED_E1_BYTES),
            received_e0_bytes: r.u32(off::RECEIVED_E0_BYTES),
            received_ce_bytes: r.u32(off::RECEIVED_CE_BYTES),
            ecn_mode: ecn.map(|u| EcnMode::from_raw(small(bitfield(u, 32, 0, 2)))),
            accecn_opt_seen: ecn.map(|u| AccEcnOptSeen::from_raw(small(bitfield(u, 32, 2, 2)))),
            accecn_fail_mode: ecn.map(|u| AccEcnFailMode::from_bits(small(bitfield(u, 32, 4, 4)))),
            options2: ecn.map(|u| bitfield(u, 32, 8, 24)),
        }
    }

    /// A lower bound of how long a connection waited in its listener's
    /// accept queue, when read right after `accept`: the time since the
    /// client's last segment, the later of [`last_data_recv`] and
    /// [`last_ack_recv`]. See [`crate::accept_queue_wait`] for what it means
    /// and its resolution; `None` when the kernel did not return the two
    /// fields.
    ///
    /// [`last_data_recv`]: TcpInfo::last_data_recv
    /// [`last_ack_recv`]: TcpInfo::last_ack_recv
    pub fn accept_queue_wait(&self) -> Option<Duration> {
        queue_wait(self.last_data_recv, self.last_ack_recv)
    }

    /// The listen queue, when this is a socket in `LISTEN` state and the
    /// kernel returned the two counters; `None` otherwise.
    pub fn listen_queue(&self) -> Option<ListenQueue> {
        match (self.state, self.unacked, self.sacked) {
            (Some(TcpState::Listen), Some(queued), Some(capacity)) => {
                Some(ListenQueue { queued, capacity })
            }
            _ => None,
        }
    }
}

/// Bytes of `struct tcp_info` that [`crate::listen_queue`] asks for: up to
/// and including `tcpi_sacked`.
pub(crate) const LISTEN_QUEUE_LEN: usize = off::SACKED + 4;

/// Bytes of `struct tcp_info` that [`crate::accept_queue_wait`] asks for: up
/// to and including `tcpi_last_ack_recv`.
pub(crate) const QUEUE_WAIT_LEN: usize = off::LAST_ACK_RECV + 4;

/// Decodes what [`crate::accept_queue_wait`] needs from a short read.
pub(crate) fn queue_wait_field(bytes: &[u8]) -> Option<Duration> {
    let r = Raw(bytes);
    queue_wait(r.millis(off::LAST_DATA_RECV), r.millis(off::LAST_ACK_RECV))
}

/// Both stamps are at or after the connection's establishment (the kernel
/// sets them when it creates the accepted socket and moves them forward
/// with each segment from the client), so each is a lower bound of the
/// time since: the larger is the tighter one.
fn queue_wait(data: Option<Duration>, ack: Option<Duration>) -> Option<Duration> {
    Some(data?.max(ack?))
}

/// Decodes what [`crate::listen_queue`] needs from a short read.
pub(crate) fn listen_fields(bytes: &[u8]) -> (Option<TcpState>, Option<u32>, Option<u32>) {
    let r = Raw(bytes);
    (
        r.u8(off::STATE).map(TcpState::from_raw),
        r.u32(off::UNACKED),
        r.u32(off::SACKED),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_contiguous_and_aligned() {
        // Each field starts where the previous one ends, at its natural
        // alignment, as the C compiler lays the struct out.
        let fields: &[(usize, usize)] = &[
            (off::RTO, 4),
            (off::TOTAL_RETRANS, 4),
            (off::PACING_RATE, 8),
            (off::BYTES_RECEIVED, 8),
            (off::SEGS_OUT, 4),
            (off::DELIVERY_RATE, 8),
            (off::SNDBUF_LIMITED, 8),
            (off::DELIVERED, 4),
            (off::BYTES_SENT, 8),
            (off::BYTES_RETRANS, 8),
            (off::TOTAL_RTO, 2),
            (off::TOTAL_RTO_RECOVERIES, 2),
            (off::TOTAL_RTO_TIME, 4),
            (off::ECN_BITS, 4),
        ];
        for &(at, size) in fields {
            assert_eq!(at % size, 0, "field at {at} misaligned");
        }
        assert_eq!(off::TOTAL_RTO_TIME + 4, 248);
        assert_eq!(off::ECN_BITS + 4, TcpInfo::KNOWN_LEN);
        assert_eq!(LISTEN_QUEUE_LEN, 32);
        assert_eq!(QUEUE_WAIT_LEN, 60);
    }

    #[test]
    fn queue_wait_is_the_later_of_the_two_stamps() {
        let mut bytes = [0u8; QUEUE_WAIT_LEN];
        bytes[off::LAST_DATA_RECV..off::LAST_DATA_RECV + 4].copy_from_slice(&40u32.to_ne_bytes());
        bytes[off::LAST_ACK_RECV..off::LAST_ACK_RECV + 4].copy_from_slice(&1500u32.to_ne_bytes());
        let want = Some(Duration::from_millis(1500));
        assert_eq!(queue_wait_field(&bytes), want);
        assert_eq!(TcpInfo::from_bytes(&bytes).accept_queue_wait(), want);
        bytes[off::LAST_DATA_RECV..off::LAST_DATA_RECV + 4].copy_from_slice(&2000u32.to_ne_bytes());
        assert_eq!(queue_wait_field(&bytes), Some(Duration::from_millis(2000)));
        // A kernel that stopped short of tcpi_last_ack_recv: unknown.
        assert_eq!(queue_wait_field(&bytes[..QUEUE_WAIT_LEN - 1]), None);
        assert_eq!(TcpInfo::from_bytes(&bytes[..56]).accept_queue_wait(), None);
    }

    #[test]
    fn bitfields_decode_in_declaration_order() {
        let mut bytes = [0u8; TcpInfo::KNOWN_LEN];
        // snd_wscale = 7, rcv_wscale = 9; app_limited = 1, tfo fail = 3.
        if cfg!(target_endian = "little") {
            bytes[off::WSCALE] = 0x97;
            bytes[off::APP_LIMITED_TFO] = 0b0000_0111;
        } else {
            bytes[off::WSCALE] = 0x79;
            bytes[off::APP_LIMITED_TFO] = 0b1110_0000;
        }
        // ecn_mode = 2, opt_seen = 1, fail_mode = 0b1010, options2 = 0xabcdef.
        let unit: u32 = if cfg!(target_endian = "little") {
            2 | (1 << 2) | (0b1010 << 4) | (0xab_cdef << 8)
        } else {
            (2 << 30) | (1 << 28) | (0b1010 << 24) | 0xab_cdef
        };
        bytes[off::ECN_BITS..off::END].copy_from_slice(&unit.to_ne_bytes());

        let info = TcpInfo::from_bytes(&bytes);
        assert_eq!(info.snd_wscale, Some(7));
        assert_eq!(info.rcv_wscale, Some(9));
        assert_eq!(info.delivery_rate_app_limited, Some(true));
        assert_eq!(
            info.fastopen_client_fail,
            Some(FastOpenClientFail::SynRetransmitted)
        );
        assert_eq!(info.ecn_mode, Some(EcnMode::AccEcn));
        assert_eq!(info.accecn_opt_seen, Some(AccEcnOptSeen::EmptySeen));
        assert_eq!(
            info.accecn_fail_mode,
            Some(AccEcnFailMode::from_bits(
                AccEcnFailMode::ACE_FAIL_RECV.bits() | AccEcnFailMode::OPT_FAIL_RECV.bits()
            ))
        );
        assert_eq!(info.options2, Some(0xab_cdef));
    }

    #[test]
    fn a_field_cut_by_the_end_is_none() {
        let bytes = [0xffu8; off::UNACKED + 3];
        let info = TcpInfo::from_bytes(&bytes);
        assert_eq!(info.rcv_mss, Some(u32::MAX));
        assert_eq!(info.unacked, None);
        let (state, queued, capacity) = listen_fields(&bytes);
        assert_eq!(state, Some(TcpState::Unknown(0xff)));
        assert_eq!((queued, capacity), (None, None));
    }
}
