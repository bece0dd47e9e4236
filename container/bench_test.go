package container_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd-lite/containerd-lite/container"
	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/passivate/memstore"
	"github.com/containerd-lite/containerd-lite/registry"
)

// benchSKUs are the SKUs of a benchmark cart: 35 SKUs of 24 bytes at
// quantity 1000 encode to about 1 KiB, as in `containerd-lite bench`.
func benchSKUs() []string {
	skus := make([]string, 35)
	for i := range skus {
		s := fmt.Sprintf("sku-%05d-", i)
		skus[i] = s + strings.Repeat("x", 24-len(s))
	}
	return skus
}

// benchCartNode starts a node on the in-memory store and fills the carts
// named ids to about 1 KiB of state each. The node is shut down when b
// ends.
func benchCartNode(b *testing.B, ids []string) *container.Container {
	b.Helper()
	reg := registry.New()
	if err := cart.Register(reg); err != nil {
		b.Fatal(err)
	}
	node, err := container.New(container.Config{Registry: reg, Store: memstore.New()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := node.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { node.Shutdown(context.Background()) })
	for _, id := range ids {
		for _, sku := range benchSKUs() {
			if _, err := cart.Add.Call(ctx, node, id, cart.Item{SKU: sku, Qty: 1000}); err != nil {
				b.Fatal(err)
			}
		}
	}
	return node
}

// benchCaller makes Add calls on one cart as an rpc client would: with a
// client id, a sequence number and an acknowledgement, so each call also
// writes its completion record.
type benchCaller struct {
	id     string
	client []byte
	seq    uint64
	args   [][]byte // one Add {sku, qty: 1} per SKU
}

func newBenchCaller(b *testing.B, id string) *benchCaller {
	c := &benchCaller{id: id, client: []byte(fmt.Sprintf("client-%s", id))}
	for _, sku := range benchSKUs() {
		a, err := registry.Marshal(cart.Item{SKU: sku, Qty: 1})
		if err != nil {
			b.Fatal(err)
		}
		c.args = append(c.args, a)
	}
	return c
}

func (c *benchCaller) call(ctx context.Context, node *container.Container) error {
	c.seq++
	_, err := node.Invoke(ctx, &registry.Call{
		Component: cart.Type.Name(), ID: c.id, Method: cart.Add.Name(),
		Args: c.args[c.seq%uint64(len(c.args))], Client: c.client, Seq: c.seq, Ack: c.seq,
	})
	return err
}

// BenchmarkInvoke measures Container.Invoke of cart.Add on a resident 1 KiB
// cart with the in-memory store: argument decoding, the turn, the method,
// state encoding and comparison, the completion record, the store write
// and the reply encoding. No network. c=64 runs 64 goroutines, each on its
// own cart.
func BenchmarkInvoke(b *testing.B) {
	ctx := context.Background()
	b.Run("c=1", func(b *testing.B) {
		node := benchCartNode(b, []string{"cart-0"})
		c := newBenchCaller(b, "cart-0")
		b.ReportAllocs()
		for b.Loop() {
			if err := c.call(ctx, node); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("c=64", func(b *testing.B) {
		par := max(1, 64/runtime.GOMAXPROCS(0))
		ids := make([]string, par*runtime.GOMAXPROCS(0))
		callers := make([]*benchCaller, len(ids))
		for i := range ids {
			ids[i] = fmt.Sprintf("cart-%d", i)
			callers[i] = newBenchCaller(b, ids[i])
		}
		node := benchCartNode(b, ids)
		var next atomic.Int64
		b.SetParallelism(par)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := callers[next.Add(1)-1]
			for pb.Next() {
				if err := c.call(ctx, node); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}
