package cart_test

import (
	"context"
	"fmt"
	"net"

	"github.com/containerd-lite/containerd-lite/container"
	"github.com/containerd-lite/containerd-lite/examples/cart"
	"github.com/containerd-lite/containerd-lite/passivate/memstore"
	"github.com/containerd-lite/containerd-lite/registry"
	"github.com/containerd-lite/containerd-lite/rpc"
)

// Example_daemon builds a node that serves your own components (here the
// cart), and calls it over the network with the typed Go client. A real
// daemon uses sqlitestore or pgstore instead of memstore, and runs until
// SIGTERM (see cmd/containerd-lite).
func Example_daemon() {
	ctx := context.Background()

	// 1. Register the component types the node serves.
	reg := registry.New()
	if err := cart.Register(reg); err != nil {
		panic(err)
	}

	// 2. A listener, a container over a store, and an RPC server.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	node, err := container.New(container.Config{
		Registry: reg, Store: memstore.New(), Addr: ln.Addr().String(),
		ProveDead: rpc.Prober{}.ProveDead,
	})
	if err != nil {
		panic(err)
	}
	if err := node.Start(ctx); err != nil {
		panic(err)
	}
	srv := rpc.NewServer(node, &rpc.ServerConfig{Incarnation: node.Incarnation(), Addr: node.Addr()})
	go srv.Serve(ln)
	defer func() {
		node.Shutdown(ctx) // drain: stop calls, passivate, deregister
		srv.Shutdown(ctx)
	}()

	// 3. A client with the node list; typed calls, no method-name strings.
	client, err := rpc.NewClient(rpc.ClientConfig{Nodes: []string{ln.Addr().String()}})
	if err != nil {
		panic(err)
	}
	defer client.Close()

	if _, err := cart.Add.Call(ctx, client, "alice", cart.Item{SKU: "apple", Qty: 2}); err != nil {
		panic(err)
	}
	line, err := cart.Add.Call(ctx, client, "alice", cart.Item{SKU: "apple", Qty: 1})
	if err != nil {
		panic(err)
	}
	fmt.Println("apples:", line.Qty)
	if _, err := cart.Add.Call(ctx, client, "alice", cart.Item{SKU: "pear", Qty: 1}); err != nil {
		panic(err)
	}
	sum, err := cart.Get.Call(ctx, client, "alice")
	if err != nil {
		panic(err)
	}
	fmt.Println("cart:", sum.Items)

	_, err = cart.Remove.Call(ctx, client, "alice", cart.Item{SKU: "kiwi", Qty: 1})
	fmt.Println("remove kiwi:", registry.CodeOf(err))

	receipt, err := cart.Checkout.Call(ctx, client, "alice")
	if err != nil {
		panic(err)
	}
	fmt.Println("receipt:", receipt.Count, "items")

	sum, _ = cart.Get.Call(ctx, client, "alice")
	fmt.Println("after checkout:", sum.Items)
	// Output:
	// apples: 3
	// cart: map[apple:3 pear:1]
	// remove kiwi: not_found
	// receipt: 4 items
	// after checkout: map[]
}
