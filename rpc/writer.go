package rpc

import (
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// frameWriter owns the write side of a stream. Frames handed to send are
// written by one goroutine which coalesces whatever is queued into a single
// write: under load one write (and one yamux frame) carries many replies.
type frameWriter struct {
	w     io.Writer
	queue chan []byte
	stop  chan struct{}
	done  chan struct{}

	stopOnce sync.Once
	mu       sync.Mutex
	err      error
	unsent   atomic.Int64 // frames handed to send and not yet written
}

const maxCoalesce = 256 << 10

func newFrameWriter(w io.Writer) *frameWriter {
	fw := &frameWriter{w: w, queue: make(chan []byte, 256), stop: make(chan struct{}), done: make(chan struct{})}
	go fw.run()
	return fw
}

func (fw *frameWriter) run() {
	defer close(fw.done)
	buf := make([]byte, 0, 64<<10)
	for {
		var f []byte
		select {
		case f = <-fw.queue:
		case <-fw.stop:
			fw.flushQueued(buf[:0])
			return
		}
		buf = append(buf[:0], f...)
		releaseFrame(f)
		n := int64(1)
		if len(fw.queue) == 0 {
			// Let the goroutines that are about to send run first: under
			// load their frames then share this write (one system call and
			// one yamux frame for many calls) instead of each paying for
			// its own. Idle, it costs one trip through the scheduler.
			runtime.Gosched()
		}
	fill:
		for len(buf) < maxCoalesce {
			select {
			case f = <-fw.queue:
				buf = append(buf, f...)
				releaseFrame(f)
				n++
			default:
				break fill
			}
		}
		if _, err := fw.w.Write(buf); err != nil {
			fw.mu.Lock()
			fw.err = err
			fw.mu.Unlock()
			return
		}
		fw.unsent.Add(-n)
		if cap(buf) > 1<<20 {
			buf = make([]byte, 0, 64<<10)
		}
	}
}

// flushQueued writes the frames still queued at close, under a short write
// deadline so that a peer that stopped reading cannot hold the close up.
func (fw *frameWriter) flushQueued(buf []byte) {
	for {
		select {
		case f := <-fw.queue:
			buf = append(buf, f...)
			continue
		default:
		}
		break
	}
	if len(buf) == 0 {
		return
	}
	if d, ok := fw.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now().Add(time.Second))
	}
	_, _ = fw.w.Write(buf)
}

// send queues a frame. It fails once the writer has stopped.
func (fw *frameWriter) send(f []byte) error {
	fw.unsent.Add(1)
	select {
	case fw.queue <- f:
		return nil
	case <-fw.done:
		fw.unsent.Add(-1)
		return fw.error()
	}
}

// flushed reports whether every frame sent so far has been written (or
// never will be: the writer stopped).
func (fw *frameWriter) flushed() bool {
	select {
	case <-fw.done:
		return true
	default:
		return fw.unsent.Load() == 0
	}
}

func (fw *frameWriter) error() error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.err != nil {
		return fw.err
	}
	return ErrConnClosed
}

// close writes the frames already queued, stops the writer and waits for it.
func (fw *frameWriter) close() {
	fw.stopOnce.Do(func() { close(fw.stop) })
	<-fw.done
}
