use super::*;
use std::time::Instant;

/// A v2 header: version/command byte, family/transport byte, address
/// block and TLV bytes.
fn v2(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | cmd);
    h.push(fam);
    h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h.extend_from_slice(tlvs);
    h
}

fn v4_block(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut b = src.to_vec();
    b.extend_from_slice(&dst);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b
}

fn header(len: usize, source: Option<&str>) -> Frame {
    Frame::Header {
        len,
        source: source.map(|s| s.parse().unwrap()),
    }
}

/// Every strict prefix of `h` is incomplete, and `h` followed by other
/// bytes is the same header as `h` alone.
fn framed(h: &[u8]) -> Frame {
    for i in 0..h.len() {
        assert!(
            matches!(parse(&h[..i]), Frame::Incomplete(n) if n > i && n <= h.len()),
            "prefix of {i} bytes: {:?}",
            parse(&h[..i])
        );
    }
    let whole = parse(h);
    let mut more = h.to_vec();
    more.extend_from_slice(b"\x16\x03\x01GET / HTTP/1.1\r\n\r\n");
    assert_eq!(parse(&more), whole, "bytes after the header change nothing");
    whole
}

#[test]
fn v1_addresses_and_unknown() {
    let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
    assert_eq!(framed(h), header(h.len(), Some("203.0.113.7:51000")));
    let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
    assert_eq!(framed(h), header(h.len(), Some("[2001:db8::7]:51000")));
    let h = b"PROXY UNKNOWN\r\n";
    assert_eq!(framed(h), header(h.len(), None));
    let h = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_eq!(framed(h), header(h.len(), None));
    // An IPv4-mapped address counts as the IPv4 address it is.
    let h = b"PROXY TCP6 ::ffff:198.51.100.9 ::1 1 2\r\n";
    assert_eq!(parse(h), header(h.len(), Some("198.51.100.9:1")));
}

#[test]
fn v1_malformed_is_invalid() {
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n",
        b"PROXY \xff",
        b"\x16\x03\x01\x02\x00",
    ] {
        assert_eq!(
            parse(bad),
            Frame::Invalid,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // No CRLF within 107 bytes.
    let long = format!("PROXY UNKNOWN {}", "x".repeat(120));
    assert_eq!(parse(long.as_bytes()), Frame::Invalid);
    let just_over = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 15));
    assert_eq!(just_over.len(), V1_MAX + 1);
    assert_eq!(parse(just_over.as_bytes()), Frame::Invalid);
    let just_in = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
    assert_eq!(parse(just_in.as_bytes()), header(V1_MAX, None));
}

#[test]
fn v2_addresses_tlvs_and_local() {
    let block = v4_block([203, 0, 113, 7], [10, 0, 0, 1], 51000, 443);
    let h = v2(1, 0x11, &block, &[]);
    assert_eq!(framed(&h), header(h.len(), Some("203.0.113.7:51000")));
    // TLVs (an AWS VPC endpoint id, a unique id) are skipped.
    let tlvs = b"\xea\x00\x08\x01vpce-1\x05\x00\x04abcd";
    let h = v2(1, 0x11, &block, tlvs);
    assert_eq!(framed(&h), header(h.len(), Some("203.0.113.7:51000")));
    // LOCAL (a balancer's own health check) keeps the socket peer, even
    // with addresses present.
    assert_eq!(framed(&v2(0, 0x11, &block, &[])), header(28, None));
    assert_eq!(framed(&v2(0, 0x00, &[], &[])), header(16, None));
    // PROXY with AF_UNSPEC, AF_UNIX or a datagram transport: the peer too.
    assert_eq!(framed(&v2(1, 0x00, &[], &[])), header(16, None));
    assert_eq!(framed(&v2(1, 0x31, &[0; 216], &[])), header(232, None));
    assert_eq!(framed(&v2(1, 0x12, &block, &[])), header(28, None));
    let mut v6 = [0u8; 36];
    v6[0..2].copy_from_slice(&[0x20, 0x01]);
    v6[2..4].copy_from_slice(&[0x0d, 0xb8]);
    v6[15] = 7;
    v6[32..34].copy_from_slice(&51000u16.to_be_bytes());
    let h = v2(1, 0x21, &v6, &[]);
    assert_eq!(framed(&h), header(52, Some("[2001:db8::7]:51000")));
}

#[test]
fn v2_malformed_is_invalid() {
    let block = v4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
    let mut bad_version = v2(1, 0x11, &block, &[]);
    bad_version[12] = 0x11;
    let mut bad_command = v2(1, 0x11, &block, &[]);
    bad_command[12] = 0x22;
    let mut bad_signature = v2(1, 0x11, &block, &[]);
    bad_signature[6] = b'X';
    for bad in [
        bad_version,
        bad_command,
        bad_signature,
        v2(1, 0x11, &block[..8], &[]),    // addresses cut short
        v2(1, 0x21, &[0; 20], &[]),       // an IPv6 block too short
        v2(1, 0x31, &[0; 100], &[]),      // AF_UNIX block too short
        v2(1, 0x41, &block, &[]),         // no such family
        v2(1, 0x11, &block, &[0; 17000]), // longer than V2_MAX
    ] {
        assert_eq!(parse(&bad), Frame::Invalid, "{:?}", &bad[..16]);
    }
}

#[test]
fn a_long_v2_header_asks_for_all_its_bytes() {
    let block = v4_block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
    let tlv = [[0x05u8, 0x03, 0xe8].as_slice(), &[b'x'; 1000]].concat();
    let h = v2(1, 0x11, &block, &tlv);
    assert_eq!(parse(&h[..20]), Frame::Incomplete(h.len()));
    assert_eq!(parse(&h[..256]), Frame::Incomplete(h.len()));
    assert_eq!(parse(&h), header(h.len(), Some("1.2.3.4:1")));
}

#[test]
fn throttle_lets_one_through_per_quiet_period_and_counts_the_rest() {
    let t = Throttle::new();
    assert_eq!(t.admit(0), Some(0));
    assert_eq!(t.admit(1), None);
    assert_eq!(t.admit(9_999), None);
    assert_eq!(t.admit(10_000), Some(2));
    assert_eq!(t.admit(10_001), None);
    assert_eq!(t.admit(25_000), Some(1));
}

#[tokio::test]
async fn read_header_leaves_what_follows_in_the_socket() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // In pieces, as a slow balancer might.
        s.write_all(b"PROXY TCP4 192.0.2.1 ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.write_all(b"192.0.2.2 1000 80\r\nhello").await.unwrap();
        s
    });
    let (mut server, _) = listener.accept().await.unwrap();
    let got = read_header(&mut server, Duration::from_secs(5)).await;
    assert_eq!(got, Ok(Some("192.0.2.1:1000".parse().unwrap())));
    let mut rest = [0u8; 5];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"hello");
    drop(client.await.unwrap());

    // Half a header, then nothing: a timeout; nothing at all: idle; half a
    // header and the peer leaves: invalid at once, not at the timeout.
    let client = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"PROXY TCP4 ").await.unwrap();
        let quiet = TcpStream::connect(addr).await.unwrap();
        let mut gone = TcpStream::connect(addr).await.unwrap();
        gone.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01")
            .await
            .unwrap();
        gone.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        (s, quiet, gone)
    });
    let (mut half, _) = listener.accept().await.unwrap();
    let (mut quiet, _) = listener.accept().await.unwrap();
    let (mut gone, _) = listener.accept().await.unwrap();
    let wait = Duration::from_millis(200);
    assert_eq!(read_header(&mut half, wait).await, Err(Refusal::Timeout));
    assert_eq!(read_header(&mut quiet, wait).await, Err(Refusal::Idle));
    let started = Instant::now();
    let long = Duration::from_secs(5);
    assert_eq!(read_header(&mut gone, long).await, Err(Refusal::Invalid));
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(client.await.unwrap());
}
