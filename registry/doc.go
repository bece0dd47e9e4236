// Package registry describes stateful components: which Go types a node can
// host, which of their methods are remotely callable, and how their state is
// encoded so that it survives failover.
//
// A component is a Go struct whose exported fields are its conversational
// state. Fields tagged `cbor:"-"` are transient: they are never persisted and
// are rebuilt in an activation hook (see [Activator]). Registration refuses a
// state type that could not survive failover (channels, funcs, interfaces,
// unexported fields not marked transient) and names the offending field.
//
// Components and their methods are declared once, as immutable typed
// descriptors, usually as package-level values next to the component:
//
//	var (
//		Type = registry.NewType[Cart]("cart", registry.Options{IdleTimeout: 10 * time.Minute})
//		Add  = registry.NewMethod(Type, "Add", (*Cart).Add)
//		Get  = registry.NewMethod0(Type, "Get", (*Cart).Get)
//	)
//
// The same descriptor serves the node (through a [Registry] value the daemon
// creates and fills with [Registry.Register]) and the Go client, which calls
// it with no method-name strings and no code generator:
//
//	sum, err := cart.Add.Call(ctx, client, "u1", cart.AddItem{SKU: "apple", Qty: 2})
//
// The package also holds the vocabulary shared by the container and the wire
// protocol: [Call] (one invocation), [Caller] (anything that can invoke one),
// and the typed [Error] with its [Code].
package registry
