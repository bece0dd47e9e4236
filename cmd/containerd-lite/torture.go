package main

import "context"

func (m *Main) torture(ctx context.Context, args []string) error {
	return usagef("torture: not built yet")
}
