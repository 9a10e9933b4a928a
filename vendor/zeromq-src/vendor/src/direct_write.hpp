//  prime_server patch: the whole file (PATCHES.md, "An application thread
//  writes to an idle ZMQ_STREAM connection itself").

#ifndef __ZMQ_DIRECT_WRITE_HPP_INCLUDED__
#define __ZMQ_DIRECT_WRITE_HPP_INCLUDED__

#include <stddef.h>

#ifndef ZMQ_HAVE_WINDOWS
#include <sys/types.h>
#include <sys/socket.h>
#endif

#include "fd.hpp"
#include "mutex.hpp"
#include "atomic_counter.hpp"
#include "macros.hpp"

namespace zmq
{
//  What a ZMQ_STREAM engine shares with its socket's end of the connection's
//  pipe, so that the socket's thread may write a message to the descriptor
//  itself while the engine has nothing to write. The engine (its I/O thread)
//  owns the output and lends it while idle:
//
//  - idle: set by the engine (release) when it stopped output with its
//    encoder empty and its last pull from the session's pipe finding nothing;
//    cleared by it (claim) before every out_event, that is before it pulls
//    or writes anything; cleared for good (kill) when it unplugs, before the
//    descriptor is closed.
//  - The socket's thread writes only under the lock, with idle set and the
//    pipe drained as its writer sees it (every message it put in the pipe
//    was read by the engine). So the engine and the socket's thread never
//    write at once, nothing written directly overtakes a message in the pipe
//    or in the engine's buffer, and the descriptor is open (and the same
//    connection's) for every direct write.
//
//  Refcounted: the engine holds one reference, the socket's pipe one.
class direct_write_t
{
  public:
    explicit direct_write_t (fd_t fd_) : _fd (fd_), _idle (false), _dead (false)
    {
        _refs.set (1);
    }

    void add_ref () { _refs.add (1); }

    //  Drops a reference; the last one deletes the object.
    static void drop (direct_write_t *direct_)
    {
        if (!direct_->_refs.sub (1))
            delete direct_;
    }

    //  Engine side (its I/O thread). The engine has stopped output with
    //  nothing left: writes may go around it until its next claim.
    void release ()
    {
        scoped_lock_t lock (_sync);
        if (!_dead)
            _idle = true;
    }

    //  Engine side: it is about to pull and write. Waits for a direct write
    //  under way to end.
    void claim ()
    {
        scoped_lock_t lock (_sync);
        _idle = false;
    }

    //  Engine side: it unplugs and will close the descriptor. No direct write
    //  after this returns.
    void kill ()
    {
        scoped_lock_t lock (_sync);
        _idle = false;
        _dead = true;
    }

    //  Socket side: writes up to size_ bytes without blocking if the engine
    //  is idle and drained_ () says the pipe holds nothing the engine has
    //  not read (called under the lock). Returns the number of bytes
    //  written, 0 when nothing was (not idle, not drained, EAGAIN), -1 on any
    //  other error (errno kept); in the last two cases the caller hands the
    //  message to the pipe, and the engine meets the same condition.
    template <typename P>
    ssize_t write (const void *data_, size_t size_, P *pipe_)
    {
#ifdef ZMQ_HAVE_WINDOWS
        LIBZMQ_UNUSED (data_);
        LIBZMQ_UNUSED (size_);
        LIBZMQ_UNUSED (pipe_);
        return 0;
#else
        scoped_lock_t lock (_sync);
        if (!_idle || !pipe_->drained_for_writer ())
            return 0;
        int flags = MSG_DONTWAIT;
#ifdef MSG_NOSIGNAL
        flags |= MSG_NOSIGNAL;
#endif
        const ssize_t n = ::send (_fd, data_, size_, flags);
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        return n;
#endif
    }

    //  Socket side: whether the connection has nothing left to write: the
    //  engine idle and the pipe drained as its writer sees it (the socket's
    //  end of the pipe, as for write). A snapshot: the engine may claim the
    //  output again at once, when the socket sends.
    template <typename P> bool idle (P *pipe_)
    {
        scoped_lock_t lock (_sync);
        return _idle && pipe_->drained_for_writer ();
    }

  private:
    ~direct_write_t () {}

    const fd_t _fd;
    mutex_t _sync;
    bool _idle;
    bool _dead;
    atomic_counter_t _refs;

    ZMQ_NON_COPYABLE_NOR_MOVABLE (direct_write_t)
};
}

#endif
