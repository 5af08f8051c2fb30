package jetbridge

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"runtime/debug"
	"time"
)

// Middleware wraps a handler: it sees the task before the handler does, and
// what the handler returned after. It can short-circuit (return a [Retry]
// or [Terminate] error without calling next), change the result, or time
// and log the call. Register it with [Service.Use] or [Service.UseFor].
//
//	func audit(next jetbridge.HandlerFunc) jetbridge.HandlerFunc {
//		return func(ctx context.Context, t *jetbridge.Task) (any, error) {
//			if blocked(t.ID) {
//				return nil, jetbridge.Terminate("blocked", "task blocked by policy")
//			}
//			return next(ctx, t)
//		}
//	}
type Middleware func(next HandlerFunc) HandlerFunc

// middleware is one registration: for every task type when pattern is "".
type middleware struct {
	pattern string
	wrap    Middleware
}

// Use adds middleware around every handler of the service, in the order
// given: the first is the outermost. It applies to attempts that arrive
// after the call, whether their handler was added before or after.
func (s *Service) Use(mw ...Middleware) {
	s.use("", mw)
}

// UseFor adds middleware around the handlers of the task types that match
// pattern, a [path.Match] pattern such as "email:*" or "image:resize". It
// runs inside the middleware of [Service.Use]; among themselves, all
// middleware run in the order they were added.
func (s *Service) UseFor(pattern string, mw ...Middleware) error {
	if _, err := path.Match(pattern, ""); err != nil || pattern == "" {
		return fmt.Errorf("jetbridge: middleware pattern %q is not a pattern like \"email:*\"", pattern)
	}
	s.use(pattern, mw)
	return nil
}

func (s *Service) use(pattern string, mw []Middleware) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range mw {
		if m != nil {
			s.middleware = append(s.middleware, middleware{pattern: pattern, wrap: m})
		}
	}
}

// chain wraps h, the handler of taskType, in the service's middleware:
// panic recovery outermost (so a panicking middleware, even one that
// panics while wrapping, cannot take the service down either), then Use's,
// then UseFor's that match.
func (s *Service) chain(taskType string, h HandlerFunc) HandlerFunc {
	s.mu.Lock()
	var global, matching []Middleware
	for _, m := range s.middleware {
		switch {
		case m.pattern == "":
			global = append(global, m.wrap)
		case matches(m.pattern, taskType):
			matching = append(matching, m.wrap)
		}
	}
	s.mu.Unlock()
	all := append(global, matching...)
	return Recover()(func(ctx context.Context, t *Task) (any, error) {
		wrapped := h
		for i := len(all) - 1; i >= 0; i-- {
			wrapped = all[i](wrapped)
		}
		return wrapped(ctx, t)
	})
}

func matches(pattern, taskType string) bool {
	ok, _ := path.Match(pattern, taskType)
	return ok
}

// panicError carries a panic to the reply as a handler_error.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// Recover turns a panic in what it wraps into an error, which the service
// replies as a retry with code handler_error. Every service already has it
// outermost; add it further in to recover closer to the handler.
func Recover() Middleware {
	return func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, t *Task) (result any, err error) {
			defer func() {
				if v := recover(); v != nil {
					result, err = nil, &panicError{value: v, stack: debug.Stack()}
				}
			}()
			return next(ctx, t)
		}
	}
}

// Logging logs each attempt when it ends: task id, type, queue, attempt,
// how long it took and its outcome (an error's code), at Info for success
// and Warn for a failure.
func Logging(logger *slog.Logger) Middleware {
	return func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, t *Task) (any, error) {
			start := time.Now()
			result, err := next(ctx, t)
			attrs := []any{"task_id", t.ID, "task_type", t.Type, "queue", t.Queue, "attempt", t.Attempt,
				"duration", time.Since(start)}
			if err != nil {
				logger.WarnContext(ctx, "jetbridge: attempt failed", append(attrs, "error", err)...)
			} else {
				logger.InfoContext(ctx, "jetbridge: attempt done", attrs...)
			}
			return result, err
		}
	}
}

// Timeout cancels the handler's context after d, with a [CancelError] of
// reason timeout, when that comes before the attempt's own budget: a
// per-task-type limit tighter than the queue's. A handler that then gives
// up with the context's error is answered as a retry with code cancelled,
// as for any cancel.
func Timeout(d time.Duration) Middleware {
	return func(next HandlerFunc) HandlerFunc {
		return func(ctx context.Context, t *Task) (any, error) {
			limited, cancel := context.WithTimeoutCause(ctx, d,
				&CancelError{Reason: "timeout", Message: fmt.Sprintf("timeout middleware: %v passed", d)})
			defer cancel()
			result, err := next(limited, t)
			if err != nil && ctx.Err() == nil && limited.Err() != nil && isCancellation(limited, err) {
				err = Retry(CodeCancelled, context.Cause(limited).Error(), 0)
			}
			return result, err
		}
	}
}
