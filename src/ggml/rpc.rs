//! Checking an RPC endpoint before ggml connects to it. ggml's RPC client
//! aborts the whole program when a server cannot be reached or does not
//! answer its handshake; so we first say hello ourselves, with timeouts,
//! and turn every way that can fail into an error naming the endpoint.
use ggml_sys as sys;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The handshake command's number and its request and reply sizes in
/// ggml's RPC protocol (`RPC_CMD_HELLO`, `rpc_msg_hello_req/rsp`).
const CMD_HELLO: u8 = 14;
const CONN_CAPS: usize = 24;
const HELLO_REPLY: usize = 4 + CONN_CAPS;

/// Split "host:port", as `--rpc` takes it.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("--rpc {endpoint:?}: expected host:port (e.g. 192.168.1.20:50052)"))?;
    if host.is_empty() {
        return Err(format!("--rpc {endpoint:?}: the host is empty (expected host:port)"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("--rpc {endpoint:?}: '{port}' is not a port number (1-65535)"))?;
    Ok((host.to_string(), port))
}

/// Connect to `endpoint`, exchange ggml's RPC hello and close. Ok when a
/// ggml RPC server of this build's protocol answered within `timeout`.
pub fn probe(endpoint: &str, timeout: Duration) -> Result<(), String> {
    let (host, port) = parse_endpoint(endpoint)?;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("--rpc {endpoint}: cannot resolve host '{host}': {e}"))?
        .collect();
    let addr = addrs.first().ok_or_else(|| format!("--rpc {endpoint}: host '{host}' has no address"))?;
    let mut s = TcpStream::connect_timeout(addr, timeout).map_err(|e| {
        format!("--rpc {endpoint}: cannot connect: {e} (is `decache rpc-server --host {host} --port {port}` running there?)")
    })?;
    let io = |e: std::io::Error| {
        let why = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!(
                    "no answer within {:.0} s (the server may be busy with another client: it serves one at a time)",
                    timeout.as_secs_f64()
                )
            }
            _ => e.to_string(),
        };
        format!("--rpc {endpoint}: the handshake failed: {why}")
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut req = vec![CMD_HELLO];
    req.extend_from_slice(&(CONN_CAPS as u64).to_le_bytes());
    req.extend_from_slice(&[0u8; CONN_CAPS]);
    s.write_all(&req).map_err(io)?;
    let mut size = [0u8; 8];
    s.read_exact(&mut size).map_err(io)?;
    let size = u64::from_le_bytes(size);
    if size != HELLO_REPLY as u64 {
        return Err(format!("--rpc {endpoint}: the answer is not a ggml RPC handshake ({size} bytes announced): is this port a decache or llama.cpp rpc-server?"));
    }
    let mut rsp = [0u8; HELLO_REPLY];
    s.read_exact(&mut rsp).map_err(io)?;
    let (major, minor, patch) = (rsp[0] as u32, rsp[1] as u32, rsp[2] as u32);
    if major != sys::RPC_PROTO_MAJOR_VERSION || minor > sys::RPC_PROTO_MINOR_VERSION {
        return Err(format!(
            "--rpc {endpoint}: the server speaks RPC protocol {major}.{minor}.{patch}, this build {}.{}.x: run the same ggml version on both sides",
            sys::RPC_PROTO_MAJOR_VERSION,
            sys::RPC_PROTO_MINOR_VERSION
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(parse_endpoint("10.0.0.2:50052").unwrap(), ("10.0.0.2".to_string(), 50052));
        assert_eq!(parse_endpoint("[::1]:7").unwrap().1, 7);
        for bad in ["localhost", ":50052", "host:", "host:0", "host:70000", "host:abc"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_closed_port_and_a_silent_server_are_errors() {
        // A port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = probe(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        // A listener that never answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
        let e = probe(&ep, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        // Something that answers, but not with ggml's handshake.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = format!("127.0.0.1:{}", l.local_addr().unwrap().port());
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 33];
            let _ = c.read_exact(&mut b);
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let e = probe(&ep, Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("not a ggml RPC handshake"), "{e}");
        t.join().unwrap();
    }
}
