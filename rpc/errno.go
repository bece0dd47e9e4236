package rpc

import "syscall"

// errTooManyFiles is the accept error that is worth waiting out.
var errTooManyFiles = syscall.EMFILE
