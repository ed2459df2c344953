//! Load for measuring and testing the sampler on a busier machine: many idle processes,
//! and many open TCP sockets on loopback spread across those processes.
//!
//! Every process is a `cat` whose input is one end of a socket pair that only this
//! process writes to, and whose output is one end of a loopback TCP connection. Nothing
//! is ever written, so they stay idle. When the [`Load`] is dropped, or this process dies
//! in any way (even killed), the pair's other end closes, each `cat` reads end-of-file
//! and exits, and its TCP socket closes with it: nothing is left behind.
//!
//! Included by the sampler tests and by `examples/sampler_loop.rs` (with `#[path]`).

#![allow(dead_code)]

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

/// Idle child processes and loopback TCP sockets, gone when dropped.
pub struct Load {
    children: Vec<Child>,
    /// The end the children read from; closing it ends them.
    feed: Option<UnixStream>,
    /// Sockets beyond one per child stay here.
    extra: Vec<TcpStream>,
    listener: TcpListener,
}

impl Load {
    /// Starts `processes` idle processes and opens `sockets` TCP sockets: the ends of
    /// loopback connections (one listener on top). Each socket is held by one child
    /// while there are children left, by this process after that.
    pub fn start(processes: usize, sockets: usize) -> io::Result<Load> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut ends: Vec<TcpStream> = Vec::with_capacity(sockets + 1);
        while ends.len() < sockets {
            let client = TcpStream::connect(("127.0.0.1", port))?;
            let (server, _) = listener.accept()?;
            ends.push(client);
            if ends.len() < sockets {
                ends.push(server);
            }
        }
        let (feed, input) = UnixStream::pair()?;
        let mut load = Load { children: Vec::with_capacity(processes), feed: Some(feed), extra: Vec::new(), listener };
        let mut ends = ends.into_iter();
        for _ in 0..processes {
            let stdout = match ends.next() {
                Some(end) => Stdio::from(OwnedFd::from(end)),
                None => Stdio::null(),
            };
            let child = Command::new("cat")
                .stdin(Stdio::from(OwnedFd::from(input.try_clone()?)))
                .stdout(stdout)
                .stderr(Stdio::null())
                .spawn()?;
            load.children.push(child);
        }
        load.extra = ends.collect();
        Ok(load)
    }

    /// The children's pids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The port the connections go to.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // End-of-file ends them all; the kill is for one that would not listen.
        self.feed = None;
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
