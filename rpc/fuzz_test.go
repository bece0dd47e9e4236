package rpc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"

	"github.com/containerd-lite/containerd-lite/registry"
)

// fuzzMaxFrame is the frame limit under fuzzing: small, so that the skip
// (up to 16x) and close (past 16x) paths are reachable with small inputs.
const fuzzMaxFrame = 512

// fuzzSeeds are valid frames of every kind and a few malformed ones.
func fuzzSeeds(t testing.TB) [][]byte {
	frame := func(kind byte, id uint64, v any) []byte {
		f, err := encodeFrame(kind, id, v)
		require.NoError(t, err)
		return f
	}
	raw := func(kind byte, id uint64, length uint32, body []byte) []byte {
		f := make([]byte, headerSize, headerSize+len(body))
		putHeader(f, header{length: length, kind: kind, id: id})
		return append(f, body...)
	}
	call := func(id uint64, method string, args any) []byte {
		return frame(kindCall, id, &callMsg{Component: "c", ID: "i", Method: method, Args: mustCBOR(t, args), Client: []byte("fuzz"), Seq: id, Ack: 1, Timeout: 5e6})
	}
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	nodeadline := func(id uint64) []byte { return frame(kindCall, id, &callMsg{Component: "c", ID: "i", Method: "block"}) }
	valid := call(1, "echo", "x")
	return [][]byte{
		valid,
		call(2, "panic", nil),
		call(3, "fail", nil),
		call(4, "block", nil),
		frame(kindHello, 0, &hello{Version: ProtocolVersion, Client: []byte("c"), Token: "t"}),
		frame(kindWelcome, 0, &welcome{Version: ProtocolVersion, Incarnation: "i", Addr: "a", MaxFrame: 1}),
		frame(kindReply, 5, &replyMsg{Result: mustCBOR(t, 1), Code: "internal", Message: "m", Addr: "a", Nodes: []string{"a", "b"}}),
		emptyFrame(kindCancel, 4),
		emptyFrame(kindPing, 6),
		emptyFrame(kindPong, 7),
		emptyFrame(kindNodes, 8),
		cat(call(4, "block", nil), emptyFrame(kindCancel, 4), call(4, "block", nil), valid),
		cat(valid, emptyFrame(kindPing, 9), emptyFrame(kindNodes, 10), call(11, "echo", []int{1, 2, 3})),
		raw(kindCall, 12, 3, []byte{0xff, 0xfe, 0xfd}),                                     // malformed CBOR
		raw(kindCall, 13, uint32(len(valid)-headerSize-2), valid[headerSize:len(valid)-2]), // truncated CBOR
		cat(raw(kindCall, 14, 2*fuzzMaxFrame, make([]byte, 2*fuzzMaxFrame)), valid),        // skipped
		raw(kindCall, 15, 1<<31, []byte{1, 2, 3}),                                          // closes the stream
		raw(kindCall, 16, 100, []byte{0xa1}),                                               // stream ends mid-frame
		raw(99, 17, 1, []byte{0}),                                                          // unknown kind
		raw(kindCall, 18, 7, []byte{0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'}),               // duplicate keys
		raw(kindCall, 19, 5, []byte{0xbf, 0x01, 0x61, 'a', 0xff}),                          // indefinite length
		raw(kindCall, 20, 5, []byte{0x9b, 0xff, 0xff, 0xff, 0xff}),                         // huge array header
		frame(kindCall, 21, map[int]any{1: 42, 2: []int{1}, 3: true, 8: "x"}),              // wrong types
		valid[:5],
		// Regressions: both wedged the node until its Close. Calls waiting to
		// be canceled past MaxInflight (4): the node stopped reading, so never
		// saw the cancels or the end of the stream.
		cat(nodeadline(30), nodeadline(31), nodeadline(32), nodeadline(33), nodeadline(34),
			emptyFrame(kindPing, 35), emptyFrame(kindCancel, 30), emptyFrame(kindCancel, 31),
			emptyFrame(kindCancel, 32), emptyFrame(kindCancel, 33), emptyFrame(kindCancel, 34)),
		// A reused id: the older call's cleanup unregistered the newer one,
		// which then outlived its stream. (The pings give that cleanup time
		// to run before the end of the stream.)
		cat(nodeadline(40), nodeadline(40), bytes.Repeat(emptyFrame(kindPing, 41), 300), valid),
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and the body
// decoders: no panic, bodies within the limit, memory bounded by the input.
func FuzzReadFrame(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	allocated := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		metrics.Read(allocated)
		before := allocated[0].Value.Uint64()
		br := bufio.NewReader(bytes.NewReader(data))
		for {
			h, body, err := readFrame(br, fuzzMaxFrame)
			var tl *frameTooLarge
			if errors.As(err, &tl) {
				require.Greater(t, int64(tl.length), int64(fuzzMaxFrame))
				if _, err := io.CopyN(io.Discard, br, int64(tl.length)); err != nil {
					break
				}
				continue
			}
			if err != nil {
				break
			}
			require.Len(t, body, int(h.length))
			require.LessOrEqual(t, len(body), fuzzMaxFrame)
			for _, v := range []any{&hello{}, &welcome{}, &callMsg{}, &replyMsg{}} {
				if decodeBody(body, v) != nil {
					continue
				}
				// Whatever decodes re-encodes, and decodes again.
				f, err := encodeFrame(h.kind, h.id, v)
				require.NoError(t, err)
				_, body2, err := readFrame(bufio.NewReader(bytes.NewReader(f)), 1<<20)
				require.NoError(t, err)
				if len(body2) > 0 {
					require.NoError(t, decodeBody(body2, v))
				}
			}
		}
		metrics.Read(allocated)
		require.Less(t, allocated[0].Value.Uint64()-before, uint64(1<<20+256*len(data)), "allocation out of proportion to the input")
	})
}

// fuzzHandler echoes, fails, panics or blocks until its context ends.
type fuzzHandler struct{}

func (fuzzHandler) Invoke(ctx context.Context, call *registry.Call) ([]byte, error) {
	switch call.Method {
	case "panic":
		panic("fuzz")
	case "fail":
		return nil, &registry.Error{Code: registry.CodeApplication, Message: "fail"}
	case "block":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return call.Args, nil
}

func (fuzzHandler) Nodes(ctx context.Context) ([]string, error) { return []string{"a:1"}, nil }

// FuzzServerStream feeds arbitrary bytes to the server's stream loop, on a
// real yamux stream after a handshake, as a client would send them: it must
// never panic or hang, and everything it answers must be well-formed
// replies or pongs.
func FuzzServerStream(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	srv := NewServer(fuzzHandler{}, &ServerConfig{MaxFrameSize: fuzzMaxFrame, MaxInflight: 4})
	cp, sp := net.Pipe()
	client, err := yamux.Client(cp, yamuxConfig())
	require.NoError(f, err)
	server, err := yamux.Server(sp, yamuxConfig())
	require.NoError(f, err)
	f.Cleanup(func() {
		client.Close()
		server.Close()
		require.NoError(f, srv.Close())
	})

	f.Fuzz(func(t *testing.T, data []byte) {
		ss := srv.newSession(server, "fuzz")
		ss.client = []byte("fuzz")
		defer func() {
			close(ss.stopWorkers)
			ss.wg.Wait()
		}()
		cst, err := client.OpenStream()
		require.NoError(t, err)
		defer cst.Close()
		sst, err := server.AcceptStream()
		require.NoError(t, err)
		served := make(chan struct{})
		go func() {
			defer close(served)
			ss.serveStream(sst, bufio.NewReader(sst), newFrameWriter(sst))
		}()
		// Write in the background: the node may stop reading midway.
		written := make(chan struct{})
		go func() {
			defer close(written)
			_ = cst.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, _ = cst.Write(data)
			_ = cst.Close() // half-close: the node sees the end of the input
		}()
		_ = cst.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(cst)
		for {
			h, body, err := readFrame(br, fuzzMaxFrame)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "the node hung or sent a bad frame")
			switch h.kind {
			case kindPong:
				require.Empty(t, body)
			case kindReply:
				var r replyMsg
				require.NoError(t, decodeBody(body, &r))
				if r.Code != "" {
					require.NotEmpty(t, r.Message)
				}
			default:
				t.Fatalf("the node sent frame kind %d", h.kind)
			}
		}
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("serveStream did not return after the stream ended")
		}
		<-written
	})
}
