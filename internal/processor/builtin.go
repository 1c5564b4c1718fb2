package processor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// builtin is a processor that runs in Conveyor's own process.
type builtin struct {
	name    string
	timeout time.Duration
	run     func(ctx context.Context, env Env, log io.Writer) error
	note    string // for SandboxNote: set when sandbox settings do not apply to it
}

var _ Processor = (*builtin)(nil)

// errBuiltinTimeout is the cause of the context a built-in runs under, so a
// timeout can be told apart from the caller's own deadline.
var errBuiltinTimeout = errors.New("processor timeout")

// Name returns the built-in's name.
func (b *builtin) Name() string { return b.name }

// Run runs the built-in under the configured timeout.
func (b *builtin) Run(ctx context.Context, env Env, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("processor %s: %w", b.name, err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, b.timeout, errBuiltinTimeout)
	defer cancel()
	err := b.run(ctx, env, log)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil && context.Cause(ctx) == errBuiltinTimeout:
		return fmt.Errorf("processor %s: %w after %s; raise processor.timeout", b.name, ErrTimeout, b.timeout)
	default:
		return fmt.Errorf("processor %s: %w", b.name, err)
	}
}

// ctxReader stops a streaming copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// copyBufSize is the chunk size of the built-ins' streaming copies; memory
// use stays at about this much whatever the input size.
const copyBufSize = 256 << 10
