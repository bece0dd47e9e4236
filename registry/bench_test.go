package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/registry"
)

// Benchmarks of the codec work of one call on a 1 KiB cart (35 SKUs of 24
// bytes, as in `containerd-lite bench`), node side then client side.

func benchCart(b *testing.B) (*registry.Component, *cart.Cart) {
	b.Helper()
	reg := registry.New()
	if err := cart.Register(reg); err != nil {
		b.Fatal(err)
	}
	comp, _ := reg.Lookup(cart.Type.Name())
	items := map[string]int{}
	for i := range 35 {
		s := fmt.Sprintf("sku-%05d-", i)
		items[s+strings.Repeat("x", 24-len(s))] = 1000
	}
	return comp, &cart.Cart{Items: items}
}

func benchAddHandler(b *testing.B, comp *registry.Component) (*registry.Handler, []byte) {
	b.Helper()
	h, ok := comp.Method(cart.Add.Name())
	if !ok {
		b.Fatal("no Add")
	}
	args, err := registry.Marshal(cart.Item{SKU: "sku-00007-xxxxxxxxxxxxxxx", Qty: 1})
	if err != nil {
		b.Fatal(err)
	}
	return h, args
}

// BenchmarkDecodeArgs decodes a cart.Add argument with the strict decoder.
func BenchmarkDecodeArgs(b *testing.B) {
	comp, _ := benchCart(b)
	h, args := benchAddHandler(b, comp)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.DecodeArgs(args); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandlerInvoke runs cart.Add on a 1 KiB cart: the method and the
// encoding of its reply (the whole cart).
func BenchmarkHandlerInvoke(b *testing.B) {
	comp, state := benchCart(b)
	h, args := benchAddHandler(b, comp)
	in, err := h.DecodeArgs(args)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Invoke(ctx, state, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeState encodes a 1 KiB cart deterministically, as the node
// does after every call.
func BenchmarkEncodeState(b *testing.B) {
	comp, state := benchCart(b)
	enc, err := comp.EncodeState(state)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := comp.EncodeState(state); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeState decodes a 1 KiB cart, as an activation does.
func BenchmarkDecodeState(b *testing.B) {
	comp, state := benchCart(b)
	enc, err := comp.EncodeState(state)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := comp.DecodeState(enc, comp.Options().StateVersion); err != nil {
			b.Fatal(err)
		}
	}
}

// replyCaller answers every call with the same encoded reply.
type replyCaller []byte

func (r replyCaller) Invoke(context.Context, *registry.Call) ([]byte, error) { return r, nil }

// BenchmarkTypedCall is the client side of a typed call: encoding the
// argument and decoding a 1 KiB cart.Summary reply.
func BenchmarkTypedCall(b *testing.B) {
	_, state := benchCart(b)
	reply, err := registry.Marshal(cart.Summary{Items: state.Items})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	in := cart.Item{SKU: "sku-00007-xxxxxxxxxxxxxxx", Qty: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cart.Add.Call(ctx, replyCaller(reply), "cart-0", in); err != nil {
			b.Fatal(err)
		}
	}
}
