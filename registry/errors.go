package registry

import (
	"context"
	"errors"
	"fmt"
)

// Code classifies an error. Codes travel on the wire as short strings.
type Code string

// Error codes. Only CodeUnavailable and CodeRedirect are retried by clients;
// every other code is final for the call that got it.
const (
	// CodeNotFound: unknown component or method.
	CodeNotFound Code = "not_found"
	// CodeBadRequest: malformed frame, missing or mistyped arguments, bad id.
	CodeBadRequest Code = "bad_request"
	// CodeRedirect: another node owns the instance; Error.Addr says which.
	CodeRedirect Code = "redirect"
	// CodeUnavailable: the node cannot serve the call now (draining, lease
	// lost, store unreachable, ownership lost). Safe to retry elsewhere.
	CodeUnavailable Code = "unavailable"
	// CodeConflict: a sequence number was reused for a different call.
	CodeConflict Code = "conflict"
	// CodeTooLarge: a frame, argument or resulting state exceeds its limit.
	CodeTooLarge Code = "too_large"
	// CodeUnauthenticated: the handshake credentials were refused.
	CodeUnauthenticated Code = "unauthenticated"
	// CodeDeadlineExceeded: the call's deadline passed before it completed.
	CodeDeadlineExceeded Code = "deadline_exceeded"
	// CodeCanceled: the caller canceled the call.
	CodeCanceled Code = "canceled"
	// CodeInternal: a bug, such as a panicking method. The node keeps running.
	CodeInternal Code = "internal"
	// CodeApplication: the method itself returned an error. The call left no
	// trace in the instance's state.
	CodeApplication Code = "application"
)

// Retryable reports whether a call that failed with this code may be retried
// on another node without any risk to correctness.
func (c Code) Retryable() bool { return c == CodeUnavailable || c == CodeRedirect }

// Error is the typed error of a call. Remote errors arrive as *Error on the
// client; a method may also return one to choose its code.
type Error struct {
	Code    Code
	Message string
	// Addr is the owner's RPC address when Code is CodeRedirect.
	Addr string
	// Remote is true when the error was produced by a node and carried over
	// the wire; false when it was produced locally (by the client itself).
	Remote bool

	cause error
}

// Errorf returns an *Error with the given code and formatted message.
// A %w verb in format is unwrapped by errors.Is and errors.As.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), cause: errors.Unwrap(err)}
}

// Error implements the error interface as "code: message".
func (e *Error) Error() string {
	if e.Addr != "" {
		return string(e.Code) + ": " + e.Message + " (" + e.Addr + ")"
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the local cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the code of err: the code of an *Error in its chain,
// CodeDeadlineExceeded or CodeCanceled for context errors, "" for nil and
// CodeInternal otherwise.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	}
	return CodeInternal
}

// AsError converts any error into an *Error, mapping context errors to their
// codes and anything else to code (usually CodeInternal or CodeApplication).
func AsError(err error, code Code) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = CodeCanceled
	}
	return &Error{Code: code, Message: err.Error(), cause: err}
}
