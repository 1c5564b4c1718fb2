package lambda

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/conveyorhq/conveyor/internal/dispatch"
)

// FailFast wraps d so that, within one invocation of Handle, once a
// dispatch finds no worker available (dispatch.ErrUnavailable: the worker
// is stopped and starting, offline, or SSM keeps throttling), the
// invocation's remaining jobs fail at once with the same cause instead of
// each waiting for the worker again. Without it, a 100-record event
// reaching a stopped worker would wait WaitOnline a hundred times and
// outlive the function's timeout. The jobs are recorded either way; the
// invocation fails and Lambda's retry, minutes later, dispatches them.
// Outside Handle, FailFast is d.
func FailFast(d dispatch.Dispatcher) dispatch.Dispatcher { return failFast{d} }

type failFast struct{ dispatch.Dispatcher }

// invocationKey carries the invocation's *unavailable in a context.
type invocationKey struct{}

// unavailable is the first dispatch.ErrUnavailable of an invocation.
type unavailable struct {
	mu  sync.Mutex
	err error
}

func withInvocation(ctx context.Context) context.Context {
	return context.WithValue(ctx, invocationKey{}, &unavailable{})
}

func (f failFast) Dispatch(ctx context.Context, jobID string) (string, error) {
	u, _ := ctx.Value(invocationKey{}).(*unavailable)
	if u == nil {
		return f.Dispatcher.Dispatch(ctx, jobID)
	}
	u.mu.Lock()
	prev := u.err
	u.mu.Unlock()
	if prev != nil {
		return "", fmt.Errorf("not sent, an earlier job of this event found no worker: %w", prev)
	}
	ref, err := f.Dispatcher.Dispatch(ctx, jobID)
	if errors.Is(err, dispatch.ErrUnavailable) {
		u.mu.Lock()
		if u.err == nil {
			u.err = err
		}
		u.mu.Unlock()
	}
	return ref, err
}
