package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hashicorp/yamux"

	"github.com/containerd-lite/containerd-lite/registry"
)

// The raw transport ceilings: minimal echo servers and clients over
// loopback TCP, with nothing of containerd-lite but the payload shape.

// echoCall and echoReply have the shape of the rpc package's call and
// reply bodies (integer keys, the same fields).
type echoCall struct {
	Component string          `cbor:"1,keyasint"`
	ID        string          `cbor:"2,keyasint"`
	Method    string          `cbor:"3,keyasint"`
	Args      cbor.RawMessage `cbor:"4,keyasint,omitempty"`
	Client    []byte          `cbor:"5,keyasint,omitempty"`
	Seq       uint64          `cbor:"6,keyasint,omitempty"`
	Ack       uint64          `cbor:"7,keyasint,omitempty"`
	Timeout   int64           `cbor:"8,keyasint,omitempty"`
}

type echoReply struct {
	Result  cbor.RawMessage `cbor:"1,keyasint,omitempty"`
	Code    string          `cbor:"2,keyasint,omitempty"`
	Message string          `cbor:"3,keyasint,omitempty"`
}

// The codecs are configured as the rpc package configures its own: the
// bounded decoder costs what the real one does.
var (
	echoEnc = func() cbor.EncMode {
		m, err := cbor.EncOptions{IndefLength: cbor.IndefLengthForbidden}.EncMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
	echoDec = func() cbor.DecMode {
		m, err := cbor.DecOptions{
			DupMapKey:        cbor.DupMapKeyEnforcedAPF,
			IndefLength:      cbor.IndefLengthForbidden,
			MaxNestedLevels:  registry.MaxNestedLevels,
			MaxArrayElements: registry.MaxArrayElements,
			MaxMapPairs:      registry.MaxMapPairs,
			DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
		}.DecMode()
		if err != nil {
			panic(err)
		}
		return m
	}()
)

// yamuxConfig is the yamux configuration of the rpc package.
func yamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.StreamCloseTimeout = 10 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	return c
}

// Frames are a 13-byte header (body length uint32, kind byte, id uint64,
// big endian, as on the rpc wire) and a body.
const (
	echoHeader   = 13
	echoMaxFrame = 4 << 20
	kindEcho     = 3
)

func putEchoHeader(b []byte, n int, id uint64) {
	binary.BigEndian.PutUint32(b[0:4], uint32(n))
	b[4] = kindEcho
	binary.BigEndian.PutUint64(b[5:13], id)
}

// encodeEchoFrame returns header and CBOR body of v in one slice.
func encodeEchoFrame(id uint64, v any) ([]byte, error) {
	body, err := echoEnc.Marshal(v)
	if err != nil {
		return nil, err
	}
	f := make([]byte, echoHeader+len(body))
	putEchoHeader(f, len(body), id)
	copy(f[echoHeader:], body)
	return f, nil
}

// readEchoFrame reads one frame into buf if it fits (else a new slice).
func readEchoFrame(r *bufio.Reader, hdr *[echoHeader]byte, buf []byte) (uint64, []byte, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	id := binary.BigEndian.Uint64(hdr[5:13])
	if n > echoMaxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	if int(n) > cap(buf) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return id, buf, nil
}

var errEchoClosed = errors.New("bench: echo connection closed")

// coalescer owns the write side of a stream: one goroutine writes whatever
// frames are queued in a single write, as the rpc package's writers do.
type coalescer struct {
	w    io.Writer
	q    chan []byte
	stop chan struct{}
	done chan struct{}
}

func newCoalescer(w io.Writer) *coalescer {
	c := &coalescer{w: w, q: make(chan []byte, 256), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *coalescer) run() {
	defer close(c.done)
	buf := make([]byte, 0, 64<<10)
	for {
		select {
		case f := <-c.q:
			buf = append(buf[:0], f...)
		case <-c.stop:
			return
		}
	fill:
		for len(buf) < 256<<10 {
			select {
			case f := <-c.q:
				buf = append(buf, f...)
			default:
				break fill
			}
		}
		if _, err := c.w.Write(buf); err != nil {
			return
		}
	}
}

func (c *coalescer) send(f []byte) error {
	select {
	case c.q <- f:
		return nil
	case <-c.done:
		return errEchoClosed
	}
}

func (c *coalescer) close() {
	close(c.stop)
	<-c.done
}

// echoServer accepts connections and serves each with serve until closed.
type echoServer struct {
	ln    net.Listener
	serve func(net.Conn)
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startEchoServer(serve func(net.Conn)) (*echoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &echoServer{ln: ln, serve: serve, conns: map[net.Conn]struct{}{}}
	s.wg.Go(s.accept)
	return s, nil
}

func (s *echoServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer c.Close()
			s.serve(c)
		})
	}
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

// close stops accepting, closes every connection and waits for the
// goroutines serving them.
func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// echoPayload is what each caller sends and gets back.
type echoPayload struct {
	ids    []string // per caller: the instance id named in the request
	args   []byte   // CBOR of the method argument
	result []byte   // CBOR of the method result
}

// yamuxEcho is the raw-yamux workload: one yamux session over one TCP
// connection, one long-lived stream, calls multiplexed by id. The client
// has a writer goroutine coalescing frames and a reader goroutine handing
// each reply to the caller waiting for it; the server has a reader that
// decodes each call and hands it to a goroutine of its own (as rpc.Server
// does), which encodes the reply for a coalescing writer.
type yamuxEcho struct {
	srv    *echoServer
	sess   *yamux.Session
	st     *yamux.Stream
	out    *coalescer
	wg     sync.WaitGroup
	result int           // the expected result size
	seq    []uint64      // per caller
	slots  []chan echoIn // per caller: its reply
	calls  []echoCall    // per caller: its request, reused
}

type echoIn struct {
	id   uint64
	body []byte
}

func newYamuxEcho(c int, p echoPayload) (*yamuxEcho, error) {
	srv, err := startEchoServer(func(nc net.Conn) { serveYamuxEcho(nc, p.result) })
	if err != nil {
		return nil, err
	}
	nc, err := net.Dial("tcp", srv.addr())
	if err != nil {
		srv.close()
		return nil, err
	}
	sess, err := yamux.Client(nc, yamuxConfig())
	if err != nil {
		nc.Close()
		srv.close()
		return nil, err
	}
	st, err := sess.OpenStream()
	if err != nil {
		sess.Close()
		srv.close()
		return nil, err
	}
	e := &yamuxEcho{
		srv: srv, sess: sess, st: st, out: newCoalescer(st), result: len(p.result),
		seq: make([]uint64, c), slots: make([]chan echoIn, c), calls: make([]echoCall, c),
	}
	client := []byte("0123456789abcdef") // a 16-byte client id, as rpc.Client's
	for w := range c {
		e.slots[w] = make(chan echoIn, 1)
		e.calls[w] = echoCall{
			Component: "cart", ID: p.ids[w], Method: "Add", Args: p.args, Client: client,
			Timeout: int64(30 * time.Second / time.Microsecond),
		}
	}
	e.wg.Go(e.read)
	return e, nil
}

// read hands each reply to the caller whose id it carries.
func (e *yamuxEcho) read() {
	br := bufio.NewReaderSize(e.st, 32<<10)
	var hdr [echoHeader]byte
	for {
		id, body, err := readEchoFrame(br, &hdr, nil)
		if err != nil {
			return
		}
		if w := int(id >> 32); w < len(e.slots) {
			select {
			case e.slots[w] <- echoIn{id: id, body: body}:
			default: // a reply nobody waits for any more
			}
		}
	}
}

func (e *yamuxEcho) call(ctx context.Context, w int) error {
	e.seq[w]++
	m := &e.calls[w]
	m.Seq, m.Ack = e.seq[w], e.seq[w]
	id := uint64(w)<<32 | e.seq[w]&0xffffffff
	f, err := encodeEchoFrame(id, m)
	if err != nil {
		return err
	}
	if err := e.out.send(f); err != nil {
		return err
	}
	for {
		select {
		case in := <-e.slots[w]:
			if in.id != id {
				continue // the reply of an abandoned call
			}
			var r echoReply
			if err := echoDec.Unmarshal(in.body, &r); err != nil {
				return err
			}
			if len(r.Result) != e.result {
				return fmt.Errorf("echo reply of %d bytes, want %d", len(r.Result), e.result)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-e.sess.CloseChan():
			return errEchoClosed
		}
	}
}

func (e *yamuxEcho) close() {
	e.out.close()
	e.sess.Close()
	e.wg.Wait()
	e.srv.close()
}

// serveYamuxEcho serves one yamux session: every stream it opens gets a
// reader that decodes each call and starts a goroutine that encodes and
// queues its reply.
func serveYamuxEcho(nc net.Conn, result []byte) {
	sess, err := yamux.Server(nc, yamuxConfig())
	if err != nil {
		return
	}
	defer sess.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer st.Close()
			out := newCoalescer(st)
			defer out.close()
			var calls sync.WaitGroup
			defer calls.Wait()
			br := bufio.NewReaderSize(st, 16<<10)
			var (
				hdr [echoHeader]byte
				buf = make([]byte, 0, 4<<10)
				m   echoCall
			)
			for {
				id, body, err := readEchoFrame(br, &hdr, buf)
				if err != nil {
					return
				}
				buf = body[:0]
				m = echoCall{}
				if err := echoDec.Unmarshal(body, &m); err != nil {
					return
				}
				// Each call is answered by a goroutine of its own, as
				// rpc.Server does: a server must not answer in line, or one
				// slow call would hold up every call behind it.
				calls.Go(func() {
					if f, err := encodeEchoFrame(id, &echoReply{Result: result}); err == nil {
						_ = out.send(f)
					}
				})
			}
		})
	}
}

// tcpEcho is the raw-tcp workload: c connections, one per caller, each
// call one length-prefixed frame each way, of the sizes of the yamux
// echo's frames. No encoding, no multiplexing.
type tcpEcho struct {
	srv   *echoServer
	conns []net.Conn
	rd    []*bufio.Reader
	bufs  [][]byte
	req   []byte
	reply int
}

func newTCPEcho(c, reqLen, replyLen int) (*tcpEcho, error) {
	reply := make([]byte, 4+replyLen)
	binary.BigEndian.PutUint32(reply, uint32(replyLen))
	srv, err := startEchoServer(func(nc net.Conn) {
		br := bufio.NewReaderSize(nc, 16<<10)
		var buf []byte
		for {
			var err error
			if buf, err = readLenFrame(br, buf); err != nil {
				return
			}
			if _, err := nc.Write(reply); err != nil {
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	e := &tcpEcho{srv: srv, req: make([]byte, 4+reqLen), reply: replyLen}
	binary.BigEndian.PutUint32(e.req, uint32(reqLen))
	for range c {
		nc, err := net.Dial("tcp", srv.addr())
		if err != nil {
			e.close()
			return nil, err
		}
		e.conns = append(e.conns, nc)
		e.rd = append(e.rd, bufio.NewReaderSize(nc, 16<<10))
		e.bufs = append(e.bufs, make([]byte, replyLen))
	}
	return e, nil
}

func readLenFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > echoMaxFrame {
		return buf, fmt.Errorf("frame of %d bytes", n)
	}
	if int(n) > cap(buf) {
		buf = make([]byte, n)
	}
	_, err := io.ReadFull(r, buf[:n])
	return buf[:n], err
}

func (e *tcpEcho) call(_ context.Context, w int) error {
	if _, err := e.conns[w].Write(e.req); err != nil {
		return err
	}
	b, err := readLenFrame(e.rd[w], e.bufs[w])
	if err != nil {
		return err
	}
	if len(b) != e.reply {
		return fmt.Errorf("echo reply of %d bytes, want %d", len(b), e.reply)
	}
	return nil
}

func (e *tcpEcho) close() {
	for _, c := range e.conns {
		c.Close()
	}
	e.srv.close()
}
