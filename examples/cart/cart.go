package cart

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/containerd-lite/containerd-lite/registry"
)

// Cart is the component's state: its exported fields are persisted after
// every call that changes them.
type Cart struct {
	Items map[string]int `json:"items"`
}

// Item names a quantity of one SKU, the argument of Add and Remove.
type Item struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Line is one SKU's quantity now in the cart: what Add and Remove return
// (Qty 0 once removed). Replies are kept small on purpose: a call's reply
// is stored with the state, in its completion record, until the client
// acknowledges it, so that a retried call gets it again.
type Line struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

// Summary is the cart's content.
type Summary struct {
	Items map[string]int `json:"items"`
}

// Receipt is what Checkout returns.
type Receipt struct {
	Items map[string]int `json:"items"`
	Count int            `json:"count"` // total quantity
}

// The component and its methods.
var (
	Type     = registry.NewType[Cart]("cart", registry.Options{IdleTimeout: 10 * time.Minute, MaxStateSize: 256 << 10})
	Add      = registry.NewMethod(Type, "Add", (*Cart).Add)
	Remove   = registry.NewMethod(Type, "Remove", (*Cart).Remove)
	Get      = registry.NewMethod0(Type, "Get", (*Cart).Get)
	Checkout = registry.NewMethod0(Type, "Checkout", (*Cart).Checkout, registry.Removes())
)

// Register adds the cart component to r.
func Register(r *registry.Registry) error { return r.Register(Type) }

// MaxQty bounds the quantity of one SKU.
const MaxQty = 1_000_000

func (it Item) check() error {
	switch {
	case it.SKU == "":
		return registry.Errorf(registry.CodeBadRequest, "sku must not be empty")
	case len(it.SKU) > 128:
		return registry.Errorf(registry.CodeBadRequest, "sku longer than 128 bytes")
	case it.Qty <= 0 || it.Qty > MaxQty:
		return registry.Errorf(registry.CodeBadRequest, "qty must be between 1 and %d, got %d", MaxQty, it.Qty)
	}
	return nil
}

// Add puts qty of sku in the cart and returns the sku's line.
func (c *Cart) Add(_ context.Context, it Item) (Line, error) {
	if err := it.check(); err != nil {
		return Line{}, err
	}
	if c.Items == nil {
		c.Items = map[string]int{}
	}
	if c.Items[it.SKU]+it.Qty > MaxQty {
		return Line{}, registry.Errorf(registry.CodeBadRequest, "at most %d of one sku", MaxQty)
	}
	c.Items[it.SKU] += it.Qty
	return Line{SKU: it.SKU, Qty: c.Items[it.SKU]}, nil
}

// Remove takes up to qty of sku out of the cart and returns the sku's line.
func (c *Cart) Remove(_ context.Context, it Item) (Line, error) {
	if err := it.check(); err != nil {
		return Line{}, err
	}
	have := c.Items[it.SKU]
	if have == 0 {
		return Line{}, registry.Errorf(registry.CodeNotFound, "sku %q is not in the cart", it.SKU)
	}
	if it.Qty >= have {
		delete(c.Items, it.SKU)
		return Line{SKU: it.SKU}, nil
	}
	c.Items[it.SKU] = have - it.Qty
	return Line{SKU: it.SKU, Qty: c.Items[it.SKU]}, nil
}

// Get returns the cart's content.
func (c *Cart) Get(context.Context) (Summary, error) { return c.summary(), nil }

// ErrEmpty is returned by Checkout on an empty cart.
var ErrEmpty = errors.New("cart is empty")

// Checkout ends the cart and returns the receipt. An empty cart cannot be
// checked out.
func (c *Cart) Checkout(context.Context) (Receipt, error) {
	if len(c.Items) == 0 {
		return Receipt{}, ErrEmpty
	}
	r := Receipt{Items: maps.Clone(c.Items)}
	for _, q := range c.Items {
		r.Count += q
	}
	return r, nil
}

func (c *Cart) summary() Summary {
	items := maps.Clone(c.Items)
	if items == nil {
		items = map[string]int{}
	}
	return Summary{Items: items}
}
