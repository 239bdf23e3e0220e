//! The PROXY protocol framing and decoding (`server::proxy_protocol::parse`)
//! on hostile bytes: never a panic; a header is never longer than the input,
//! the v1 or v2 bound, and parses the same alone and with bytes after it;
//! "incomplete" always asks for more than it was given; "invalid" stays
//! invalid whatever follows; and headers built from the input's own bytes
//! (v1 and v2, IPv4 and IPv6) decode to the address they were built with.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use usher::server::proxy_protocol::{parse, Frame, V1_MAX, V2_MAX, V2_SIGNATURE};

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    round_trip(data);
});

fn check_frame(data: &[u8]) {
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"\r\n\x16\x03\x01GET / HTTP/1.1\r\n");
    match parse(data) {
        Frame::Header { len, source } => {
            assert!(len <= data.len());
            match data[0] {
                b'P' => assert!(len <= V1_MAX),
                _ => assert!(len <= V2_MAX && len >= 16),
            }
            assert_eq!(parse(&data[..len]), Frame::Header { len, source });
            assert_eq!(parse(&longer), Frame::Header { len, source });
            for cut in [len - 1, len / 2] {
                assert!(
                    matches!(parse(&data[..cut]), Frame::Incomplete(n) if n > cut && n <= len),
                    "a prefix of a header is incomplete"
                );
            }
            if let Some(s) = source {
                assert!(!matches!(s.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
            }
        }
        Frame::Incomplete(n) => {
            assert!(n > data.len(), "incomplete asks for more than it has");
            assert!(n <= V2_MAX);
        }
        Frame::Invalid => assert_eq!(parse(&longer), Frame::Invalid),
    }
}

/// Headers built from the input's bytes decode to what they were built with.
fn round_trip(data: &[u8]) {
    if data.len() < 36 {
        return;
    }
    let port = u16::from_be_bytes([data[32], data[33]]);
    let v4 = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
    let mut six = [0u8; 16];
    six.copy_from_slice(&data[16..32]);
    let v6 = Ipv6Addr::from(six);
    let tlv_len = usize::from(data[34]).min(data.len() - 35);
    let tlvs = &data[35..35 + tlv_len];
    for ip in [IpAddr::V4(v4), IpAddr::V6(v6)] {
        let want = SocketAddr::new(canonical(ip), port);
        let text = match ip {
            IpAddr::V4(a) => format!("PROXY TCP4 {a} 10.0.0.1 {port} 443\r\n"),
            IpAddr::V6(a) => format!("PROXY TCP6 {a} ::1 {port} 443\r\n"),
        };
        assert_eq!(
            parse(text.as_bytes()),
            Frame::Header {
                len: text.len(),
                source: Some(want)
            },
            "{text:?}"
        );
        let mut bin = V2_SIGNATURE.to_vec();
        let (fam, addrs): (u8, Vec<u8>) = match ip {
            IpAddr::V4(a) => (0x11, [a.octets().as_slice(), &[10, 0, 0, 1]].concat()),
            IpAddr::V6(a) => (0x21, [a.octets().as_slice(), &[0; 16]].concat()),
        };
        bin.extend_from_slice(&[0x21, fam]);
        bin.extend_from_slice(&((addrs.len() + 4 + tlvs.len()) as u16).to_be_bytes());
        bin.extend_from_slice(&addrs);
        bin.extend_from_slice(&port.to_be_bytes());
        bin.extend_from_slice(&443u16.to_be_bytes());
        bin.extend_from_slice(tlvs); // skipped unread, whatever they hold
        assert_eq!(
            parse(&bin),
            Frame::Header {
                len: bin.len(),
                source: Some(want)
            }
        );
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
