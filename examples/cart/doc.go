// Package cart is the shopping cart component, the classic stateful session
// bean demo, served by the stock containerd-lite daemon.
//
// A cart's state is its items (SKU → quantity). Add and Remove change it
// and return the changed line, Get reads the whole cart, and Checkout ends
// the instance: its stored state is deleted and the receipt returned. Every method is declared once as a typed
// descriptor that the daemon registers and Go clients call:
//
//	line, err := cart.Add.Call(ctx, client, "u1", cart.Item{SKU: "apple", Qty: 2})
//
// The package's examples show how to build your own daemon with your own
// components.
package cart
