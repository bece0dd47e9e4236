package rpc

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd-lite/containerd-lite/registry"
)

// Benchmarks of the wire hot paths. Payloads have the shape of a cart Add
// call on a 1 KiB cart (see examples/cart): a small argument, and a reply
// of about 1 KiB. Compare runs with benchstat:
//
//	go test -run '^$' -bench . -count 10 ./rpc > old.txt

const benchReplySize = 1 << 10

// benchCallMsg is a call as rpc.Client sends it.
func benchCallMsg() *callMsg {
	args, err := registry.Marshal(struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	}{SKU: "sku-00007-xxxxxxxxxxxxxxx", Qty: 1})
	if err != nil {
		panic(err)
	}
	return &callMsg{
		Component: "cart", ID: "customer-000042", Method: "Add", Args: args,
		Client: []byte("0123456789abcdef"), Seq: 123456, Ack: 123450,
		Timeout: int64(30 * time.Second / time.Microsecond),
	}
}

// benchResult is a CBOR byte string of about benchReplySize bytes.
func benchResult() []byte {
	b, err := registry.Marshal(strings.Repeat("x", benchReplySize-3))
	if err != nil {
		panic(err)
	}
	return b
}

func BenchmarkFrameEncode(b *testing.B) {
	b.Run("call", func(b *testing.B) {
		m := benchCallMsg()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeFrame(kindCall, 42, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reply", func(b *testing.B) {
		m := &replyMsg{Result: benchResult()}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeFrame(kindReply, 42, m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchLoopReader returns the same bytes over and over.
type benchLoopReader struct {
	b   []byte
	off int
}

func (r *benchLoopReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

// BenchmarkFrameDecode reads a frame from a buffered stream and decodes its
// body, as the server does with calls and the client with replies.
func BenchmarkFrameDecode(b *testing.B) {
	decode := func(b *testing.B, kind byte, v any, into func() any) {
		f, err := encodeFrame(kind, 42, v)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReaderSize(&benchLoopReader{b: f}, 16<<10)
		b.SetBytes(int64(len(f)))
		b.ReportAllocs()
		for b.Loop() {
			_, body, err := readFrame(br, DefaultMaxFrameSize)
			if err != nil {
				b.Fatal(err)
			}
			if err := decodeBody(body, into()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("call", func(b *testing.B) {
		decode(b, kindCall, benchCallMsg(), func() any { return new(callMsg) })
	})
	b.Run("reply", func(b *testing.B) {
		decode(b, kindReply, &replyMsg{Result: benchResult()}, func() any { return new(replyMsg) })
	})
}

// benchHandler answers every call with the same result.
type benchHandler struct{ result []byte }

func (h *benchHandler) Invoke(context.Context, *registry.Call) ([]byte, error) { return h.result, nil }
func (h *benchHandler) Nodes(context.Context) ([]string, error)                { return nil, nil }

// benchServe starts a server with a trivial handler on a loopback port and
// a client of it, both closed when b ends.
func benchServe(b *testing.B) *Client {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(&benchHandler{result: benchResult()}, &ServerConfig{Addr: ln.Addr().String()})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	client, err := NewClient(ClientConfig{Nodes: []string{ln.Addr().String()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		client.Close()
		srv.Close()
		<-served
	})
	return client
}

// BenchmarkRoundTrip measures a call through Client and Server over
// loopback TCP with a handler that does nothing: the protocol's own cost,
// client and server together, from 1 caller and from 64 concurrent ones.
func BenchmarkRoundTrip(b *testing.B) {
	m := benchCallMsg()
	call := func(ctx context.Context, c *Client, id string) error {
		_, err := c.Invoke(ctx, &registry.Call{Component: m.Component, ID: id, Method: m.Method, Args: m.Args})
		return err
	}
	b.Run("c=1", func(b *testing.B) {
		client := benchServe(b)
		ctx := context.Background()
		if err := call(ctx, client, "warm"); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := call(ctx, client, "id-0"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
	b.Run("c=64", func(b *testing.B) {
		client := benchServe(b)
		ctx := context.Background()
		if err := call(ctx, client, "warm"); err != nil {
			b.Fatal(err)
		}
		var next atomic.Int64
		b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			id := fmt.Sprintf("id-%d", next.Add(1))
			for pb.Next() {
				if err := call(ctx, client, id); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}
