//! Small helpers around `zmq` sockets shared by every piece: creation with the options
//! we always want, multipart send and receive without copying, and endpoint checks.

use crate::base::endpoint::{self, Use};
use crate::base::error::{Error, Result};
use std::time::Duration;

/// Creates a socket with linger 0, so that closing it (and the process) never waits
/// for peers that are gone.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> Result<zmq::Socket> {
    let socket = ctx
        .socket(kind)
        .map_err(|e| Error::zmq("creating a socket", e))?;
    socket
        .set_linger(0)
        .map_err(|e| Error::zmq("setting linger", e))?;
    Ok(socket)
}

/// Sets `ZMQ_TCP_MAXRT` (the kernel's `TCP_USER_TIMEOUT`) on a socket, for the TCP
/// connections it makes or accepts from then on: a connection whose sent data stays
/// unacknowledged that long, or whose peer keeps its receive window shut that long (a
/// client that stopped reading), is aborted, and the socket sees the peer go. The `zmq`
/// crate does not wrap this option. Zero leaves the kernel's default (about 15 minutes
/// of retransmissions, and no limit for a shut window).
pub fn set_tcp_max_retransmit(socket: &mut zmq::Socket, timeout: Duration) -> Result<()> {
    let millis =
        std::os::raw::c_int::try_from(timeout.as_millis()).unwrap_or(std::os::raw::c_int::MAX);
    set_int_option(
        socket,
        zmq_sys::ZMQ_TCP_MAXRT,
        millis,
        "setting ZMQ_TCP_MAXRT",
    )
}

/// Sets `ZMQ_USE_FD`: the socket's next TCP bind listens on `fd`, a socket the caller
/// has bound, set listening and non-blocking, instead of opening one. libzmq owns the
/// descriptor from the bind on, and closes it when the endpoint is unbound or the
/// socket closed. The `zmq` crate does not wrap this option.
pub fn set_use_fd(socket: &mut zmq::Socket, fd: std::os::fd::RawFd) -> Result<()> {
    set_int_option(socket, zmq_sys::ZMQ_USE_FD, fd, "setting ZMQ_USE_FD")
}

/// Sets an int-valued socket option the `zmq` crate does not wrap.
fn set_int_option(
    socket: &mut zmq::Socket,
    option: u32,
    value: std::os::raw::c_int,
    what: &str,
) -> Result<()> {
    // SAFETY: the socket pointer comes from a live `zmq::Socket` we hold mutably, and
    // the option takes an int, passed by address with its size as zmq_setsockopt(3)
    // requires; libzmq copies the value before returning.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option as std::os::raw::c_int,
            (&value as *const std::os::raw::c_int).cast(),
            std::mem::size_of::<std::os::raw::c_int>(),
        )
    };
    if rc == -1 {
        // SAFETY: zmq_errno only reads libzmq's thread-local errno.
        let errno = unsafe { zmq_sys::zmq_errno() };
        return Err(Error::zmq(what.to_string(), zmq::Error::from_raw(errno)));
    }
    Ok(())
}

/// How many messages may wait in a pipe into a proxy. Jobs on their way to a stage must
/// be refused by the proxy's queue bound (503), never by libzmq's default high-water
/// mark of 1000 a side, which a descheduled proxy thread reaches in a moment; this bound
/// only keeps a dead proxy's backlog from growing without limit.
pub const STAGE_PIPE_HWM: i32 = 100_000;

/// A DEALER that sends jobs into a stage's proxy (the front end's entry, a worker's
/// route to the next stage), with [`STAGE_PIPE_HWM`].
pub fn stage_sender(ctx: &zmq::Context) -> Result<zmq::Socket> {
    let socket = self::socket(ctx, zmq::DEALER)?;
    socket
        .set_sndhwm(STAGE_PIPE_HWM)
        .map_err(|e| Error::zmq("setting the send high-water mark", e))?;
    Ok(socket)
}

/// Binds `socket` to `endpoint`, with an error that names the endpoint. A tcp host
/// name is resolved first and the socket bound to its address
/// ([`endpoint::bind_address`]): libzmq would read the name as a network interface.
pub fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<()> {
    Error::check_endpoint(endpoint, Use::Bind)?;
    let Some(resolved) = endpoint::bind_address(endpoint) else {
        return socket
            .bind(endpoint)
            .map_err(|e| Error::zmq(format!("binding {endpoint}"), e));
    };
    if resolved.starts_with("tcp://[") {
        socket
            .set_ipv6(true)
            .map_err(|e| Error::zmq(format!("enabling IPv6 to bind {endpoint}"), e))?;
    }
    socket
        .bind(&resolved)
        .map_err(|e| Error::zmq(format!("binding {endpoint} (resolved to {resolved})"), e))
}

/// Connects `socket` to `endpoint`, with an error that names the endpoint.
pub fn connect(socket: &zmq::Socket, endpoint: &str) -> Result<()> {
    Error::check_endpoint(endpoint, Use::Connect)?;
    socket
        .connect(endpoint)
        .map_err(|e| Error::zmq(format!("connecting to {endpoint}"), e))
}

/// The endpoint a socket actually bound, e.g. the port picked for `tcp://127.0.0.1:0`.
pub fn last_endpoint(socket: &zmq::Socket) -> Result<String> {
    match socket.get_last_endpoint() {
        Ok(Ok(endpoint)) => Ok(endpoint),
        Ok(Err(_)) => Err(Error::Config("last endpoint is not UTF-8".into())),
        Err(e) => Err(Error::zmq("reading the last endpoint", e)),
    }
}

/// Receives every frame of one multipart message. With `zmq::DONTWAIT` it returns
/// `Err(EAGAIN)` when nothing is waiting; the frames are libzmq's own buffers, not copies.
pub fn recv_frames(socket: &zmq::Socket, flags: i32) -> zmq::Result<Vec<zmq::Message>> {
    let mut frames = Vec::with_capacity(4);
    recv_frames_into(socket, &mut frames, flags)?;
    Ok(frames)
}

/// Like [`recv_frames`], into `frames` (cleared first), so that a loop can reuse one
/// vector's allocation for message after message.
pub fn recv_frames_into(
    socket: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
    flags: i32,
) -> zmq::Result<()> {
    frames.clear();
    let mut first = zmq::Message::new();
    socket.recv(&mut first, flags)?;
    push_with_the_rest(socket, frames, first, flags)
}

/// Pushes `first` onto `frames`, then receives and pushes the message's frames after
/// it, if any.
#[inline]
fn push_with_the_rest(
    socket: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
    first: zmq::Message,
    flags: i32,
) -> zmq::Result<()> {
    let mut more = first.get_more();
    frames.push(first);
    while more {
        let mut frame = zmq::Message::new();
        socket.recv(&mut frame, flags)?;
        more = frame.get_more();
        frames.push(frame);
    }
    Ok(())
}

/// Receives one message from a ROUTER into `frames` (cleared first) without the frame
/// of its sender's routing id, which goes into `sender` instead; returns the id's
/// length. One call into libzmq for the id and the first frame (the vendored
/// `zmq_msg_recv_from`), where [`recv_frames_into`] made a message of the id and passed
/// it through the socket as a frame of its own.
///
/// # Errors
/// As [`zmq::Socket::recv`]; `EFSM` if a message's frames were left half-read.
pub fn recv_routed_into(
    socket: &zmq::Socket,
    sender: &mut [u8; zmq::ROUTING_ID_MAX],
    frames: &mut Vec<zmq::Message>,
    flags: i32,
) -> zmq::Result<usize> {
    frames.clear();
    let mut first = zmq::Message::new();
    let id_len = socket.recv_from(&mut first, sender, flags)?;
    push_with_the_rest(socket, frames, first, flags)?;
    Ok(id_len)
}

/// Vectors of frames kept for reuse by one thread (see [`recv_frames_into`]): a
/// message received into a reused vector costs no allocation for the vector.
#[derive(Debug, Default)]
pub struct SpareFrames(Vec<Vec<zmq::Message>>);

impl SpareFrames {
    /// How many empty vectors are kept at most.
    const KEPT: usize = 16;

    /// An empty vector to fill: a spare one, or a new one when none is kept.
    pub fn take(&mut self) -> Vec<zmq::Message> {
        self.0.pop().unwrap_or_else(|| Vec::with_capacity(4))
    }

    /// Receives one message into a spare vector (or a new one).
    pub fn recv(&mut self, socket: &zmq::Socket, flags: i32) -> zmq::Result<Vec<zmq::Message>> {
        let mut frames = self.take();
        match recv_frames_into(socket, &mut frames, flags) {
            Ok(()) => Ok(frames),
            Err(e) => {
                self.give_back(frames);
                Err(e)
            }
        }
    }

    /// Receives one message from a ROUTER into a spare vector (or a new one), its
    /// sender's routing id into `sender` (see [`recv_routed_into`]); returns the
    /// frames and the id's length.
    pub fn recv_routed(
        &mut self,
        socket: &zmq::Socket,
        sender: &mut [u8; zmq::ROUTING_ID_MAX],
        flags: i32,
    ) -> zmq::Result<(Vec<zmq::Message>, usize)> {
        let mut frames = self.take();
        match recv_routed_into(socket, sender, &mut frames, flags) {
            Ok(id_len) => Ok((frames, id_len)),
            Err(e) => {
                self.give_back(frames);
                Err(e)
            }
        }
    }

    /// Keeps a message's frames to be sent later: one frame (the usual job) without its
    /// vector, which goes back to the spares for the next message received, so that a
    /// queue of thousands costs no vector each.
    pub fn park(&mut self, mut frames: Vec<zmq::Message>) -> Parked {
        if frames.len() == 1 {
            if let Some(frame) = frames.pop() {
                self.give_back(frames);
                return Parked::One([frame]);
            }
        }
        Parked::Frames(frames)
    }

    /// A parked message's frames, in a spare vector when it was kept without one.
    pub fn unpark(&mut self, parked: Parked) -> Vec<zmq::Message> {
        match parked {
            Parked::One([frame]) => {
                let mut frames = self.take();
                frames.push(frame);
                frames
            }
            Parked::Frames(frames) => frames,
        }
    }

    /// Keeps `frames`'s allocation for a later message (its frames are dropped).
    pub fn give_back(&mut self, mut frames: Vec<zmq::Message>) {
        if self.0.len() < Self::KEPT && frames.capacity() > 0 {
            frames.clear();
            self.0.push(frames);
        }
    }
}

/// A message's frames kept for later by [`SpareFrames::park`].
#[derive(Debug)]
pub enum Parked {
    /// A message of one frame, kept without a vector.
    One([zmq::Message; 1]),
    /// A message of several frames (or none).
    Frames(Vec<zmq::Message>),
}

impl Parked {
    /// The message's frames.
    pub fn frames(&self) -> &[zmq::Message] {
        match self {
            Parked::One(frame) => frame,
            Parked::Frames(frames) => frames,
        }
    }
}

/// Sends `frames` as one multipart message.
pub fn send_frames<I>(socket: &zmq::Socket, frames: I, flags: i32) -> zmq::Result<()>
where
    I: IntoIterator<Item = zmq::Message>,
{
    // Each frame is sent once the next one is known to exist (with SNDMORE), the last
    // one without: a frame waits in one place, where a peekable iterator would move
    // each through its buffer.
    let mut frames = frames.into_iter();
    let Some(mut frame) = frames.next() else {
        return Ok(());
    };
    for next in frames {
        socket.send(frame, flags | zmq::SNDMORE)?;
        frame = next;
    }
    socket.send(frame, flags)
}

/// Sends `frames` as one multipart message, leaving the vector empty with its
/// allocation kept (for [`SpareFrames::give_back`]). On an error the frames not sent
/// are left in it, in no particular order, to be dropped.
pub fn send_all(
    socket: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
    flags: i32,
) -> zmq::Result<()> {
    // Popped from the back of the reversed vector: no `Drain` to build and drop for
    // the usual message of one frame, which reversing leaves as it is.
    frames.reverse();
    while let Some(frame) = frames.pop() {
        let more = if frames.is_empty() { 0 } else { zmq::SNDMORE };
        socket.send(frame, flags | more)?;
    }
    Ok(())
}

/// Waits for `items` for at most `timeout`, treating an interrupted system call as a
/// wake-up with nothing ready.
pub fn poll(items: &mut [zmq::PollItem], timeout: Duration) -> Result<()> {
    match zmq::poll(items, timeout.as_millis().min(i64::MAX as u128) as i64) {
        Ok(_) | Err(zmq::Error::EINTR) => Ok(()),
        Err(e) => Err(Error::zmq("polling", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_frame_keeps_no_vector_and_comes_back_whole() {
        let mut spare = SpareFrames::default();
        let parked = spare.park(vec![zmq::Message::from("lead")]);
        assert!(matches!(parked, Parked::One(_)));
        assert_eq!(spare.0.len(), 1, "the vector goes back to the spares");
        assert_eq!(&parked.frames()[0][..], b"lead");
        let frames = spare.unpark(parked);
        assert_eq!(spare.0.len(), 0, "unparked into the spare vector");
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], b"lead");

        let parked = spare.park(vec![zmq::Message::from("a"), zmq::Message::from("b")]);
        assert!(matches!(parked, Parked::Frames(_)));
        let frames = spare.unpark(parked);
        let frames: Vec<&[u8]> = frames.iter().map(|frame| &frame[..]).collect();
        assert_eq!(frames, [b"a", b"b"]);
    }

    #[test]
    fn send_all_sends_the_frames_in_order_and_keeps_the_vector() {
        let ctx = zmq::Context::new();
        let pull = socket(&ctx, zmq::PULL).unwrap();
        pull.bind("inproc://send-all").unwrap();
        pull.set_rcvtimeo(10_000).unwrap();
        let push = socket(&ctx, zmq::PUSH).unwrap();
        push.connect("inproc://send-all").unwrap();
        for parts in [&["one"][..], &["a", "b", "c"][..]] {
            let mut frames: Vec<zmq::Message> = parts.iter().map(|p| (*p).into()).collect();
            let capacity = frames.capacity();
            send_all(&push, &mut frames, 0).unwrap();
            assert!(frames.is_empty());
            assert_eq!(frames.capacity(), capacity);
            let received = recv_frames(&pull, 0).unwrap();
            let received: Vec<&[u8]> = received.iter().map(|frame| &frame[..]).collect();
            let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            assert_eq!(received, parts);
        }
    }

    /// The bytes of message `index`: its length runs through every size of our
    /// libzmq's pool of long-message contents and past it, each byte told by its
    /// message and position.
    fn long_message(index: usize) -> Vec<u8> {
        let len = 34 + (index * 37) % 1400;
        (0..len).map(|at| (index * 31 + at * 7) as u8).collect()
    }

    #[test]
    fn long_messages_made_on_one_thread_and_closed_on_another_keep_their_bytes() {
        // Our libzmq takes the contents of long messages from a pool that a closing
        // thread gives back to and a making thread takes from (PATCHES.md): each
        // message is made on a maker thread and closed here, each echo made here and
        // closed on the maker, every byte checked; each round's maker is a new thread
        // (a thread's cache is freed when it ends).
        let ctx = zmq::Context::new();
        const ROUNDS: usize = 4;
        const EACH: usize = 500;
        for round in 0..ROUNDS {
            let there = format!("inproc://long-messages-{round}");
            let back = format!("inproc://long-echoes-{round}");
            let pull = socket(&ctx, zmq::PULL).unwrap();
            pull.bind(&there).unwrap();
            // A failed maker must not leave this loop waiting for ever.
            pull.set_rcvtimeo(10_000).unwrap();
            let echoes = socket(&ctx, zmq::PUSH).unwrap();
            echoes.bind(&back).unwrap();
            let maker_ctx = ctx.clone();
            let maker = std::thread::spawn(move || {
                let push = socket(&maker_ctx, zmq::PUSH).unwrap();
                push.connect(&there).unwrap();
                let echoed = socket(&maker_ctx, zmq::PULL).unwrap();
                echoed.connect(&back).unwrap();
                echoed.set_rcvtimeo(10_000).unwrap();
                for index in round * EACH..(round + 1) * EACH {
                    push.send(&long_message(index)[..], 0).unwrap();
                    let mut echo = zmq::Message::new();
                    echoed.recv(&mut echo, 0).unwrap();
                    assert!(echo[..] == long_message(index)[..], "echo {index}");
                }
            });
            for index in round * EACH..(round + 1) * EACH {
                let mut frame = zmq::Message::new();
                pull.recv(&mut frame, 0).unwrap();
                assert!(frame[..] == long_message(index)[..], "message {index}");
                echoes.send(&frame[..], 0).unwrap();
            }
            maker.join().unwrap();
        }
    }

    /// A ROUTER and two DEALERs with routing ids "d1" and "d2", connected over inproc.
    fn router_and_dealers(ctx: &zmq::Context, name: &str) -> (zmq::Socket, [zmq::Socket; 2]) {
        let router = socket(ctx, zmq::ROUTER).unwrap();
        router.set_router_mandatory(true).unwrap();
        router.set_rcvtimeo(10_000).unwrap();
        router.bind(&format!("inproc://{name}")).unwrap();
        let dealers = ["d1", "d2"].map(|id| {
            let dealer = socket(ctx, zmq::DEALER).unwrap();
            dealer.set_identity(id.as_bytes()).unwrap();
            dealer.set_rcvtimeo(10_000).unwrap();
            dealer.connect(&format!("inproc://{name}")).unwrap();
            dealer
        });
        (router, dealers)
    }

    fn texts(frames: &[zmq::Message]) -> Vec<&[u8]> {
        frames.iter().map(|frame| &frame[..]).collect()
    }

    #[test]
    fn routed_messages_come_with_their_sender_and_go_to_their_peer() {
        let ctx = zmq::Context::new();
        let (router, [d1, d2]) = router_and_dealers(&ctx, "routed");
        let mut sender = [0u8; zmq::ROUTING_ID_MAX];
        let mut frames = Vec::new();
        // One frame, then three, from two peers, read as [id, frames...] reads them.
        d1.send("job", 0).unwrap();
        d2.send_multipart(["a", "b", "c"], 0).unwrap();
        d1.send("after", 0).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let len = recv_routed_into(&router, &mut sender, &mut frames, 0).unwrap();
            let frames: Vec<Vec<u8>> = texts(&frames).iter().map(|f| f.to_vec()).collect();
            got.push((sender[..len].to_vec(), frames));
        }
        got.sort();
        let expected: Vec<(Vec<u8>, Vec<Vec<u8>>)> = vec![
            (b"d1".to_vec(), vec![b"after".to_vec()]),
            (b"d1".to_vec(), vec![b"job".to_vec()]),
            (
                b"d2".to_vec(),
                vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            ),
        ];
        assert_eq!(got, expected);

        // A message that a poll read ahead (the ROUTER keeps it and its id) comes whole.
        d2.send_multipart(["x", "y"], 0).unwrap();
        let mut items = [router.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 10_000).unwrap();
        assert!(items[0].is_readable());
        let len = recv_routed_into(&router, &mut sender, &mut frames, 0).unwrap();
        assert_eq!(&sender[..len], b"d2");
        assert_eq!(texts(&frames), [&b"x"[..], b"y"]);

        // Half a message read the old way: the rest must be read before a routed read.
        d1.send_multipart(["p", "q"], 0).unwrap();
        assert_eq!(&router.recv_msg(0).unwrap()[..], b"d1");
        let mut frame = zmq::Message::new();
        assert_eq!(
            router.recv_from(&mut frame, &mut sender, 0),
            Err(zmq::Error::EFSM)
        );
        assert_eq!(&router.recv_msg(0).unwrap()[..], b"p");
        assert_eq!(&router.recv_msg(0).unwrap()[..], b"q");

        // Sending: the lead frame with the peer's id, then the rest.
        router
            .send_to(b"d2", zmq::Message::from("one"), zmq::DONTWAIT)
            .unwrap();
        router
            .send_to(b"d1", zmq::Message::from("m"), zmq::DONTWAIT | zmq::SNDMORE)
            .unwrap();
        // A second routed send while one is under way is refused, its message kept.
        let (error, kept) = router
            .send_to(b"d2", zmq::Message::from("no"), zmq::DONTWAIT)
            .unwrap_err();
        assert_eq!((error, &kept[..]), (zmq::Error::EFSM, &b"no"[..]));
        router.send("n", 0).unwrap();
        assert_eq!(recv_frames(&d2, 0).unwrap().len(), 1);
        assert_eq!(texts(&recv_frames(&d1, 0).unwrap()), [&b"m"[..], b"n"]);

        // No such peer: refused with the message given back; waiting is not allowed.
        let (error, kept) = router
            .send_to(b"nobody", zmq::Message::from("lost"), zmq::DONTWAIT)
            .unwrap_err();
        assert_eq!((error, &kept[..]), (zmq::Error::EHOSTUNREACH, &b"lost"[..]));
        let (error, _) = router
            .send_to(b"d1", zmq::Message::from("w"), 0)
            .unwrap_err();
        assert_eq!(error, zmq::Error::EINVAL);

        // Other socket types do not route this way.
        let (error, _) = d1
            .send_to(b"d1", zmq::Message::from("w"), zmq::DONTWAIT)
            .unwrap_err();
        assert_eq!(error, zmq::Error::ENOTSUP);
        assert_eq!(
            d1.recv_from(&mut frame, &mut sender, zmq::DONTWAIT),
            Err(zmq::Error::ENOTSUP)
        );
    }
}
