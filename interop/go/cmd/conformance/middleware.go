package main

import (
	"context"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
)

// trail is conf:mw's result: the names of the handler and of the middleware
// it passed through on the way out (SPEC §12.2).
type trail struct {
	Trail []string `json:"trail"`
}

// mwHandler serves conf:mw and conf:mw_blocked (which middleware keeps from
// running).
func (h *handlers) mwHandler(_ context.Context, _ *jetbridge.Task) (any, error) {
	return &trail{Trail: []string{"handler"}}, nil
}

// tagger appends name to a trail result on the way out.
func tagger(name string) jetbridge.Middleware {
	return func(next jetbridge.HandlerFunc) jetbridge.HandlerFunc {
		return func(ctx context.Context, t *jetbridge.Task) (any, error) {
			result, err := next(ctx, t)
			if tr, ok := result.(*trail); ok && err == nil {
				tr.Trail = append(tr.Trail, name)
			}
			return result, err
		}
	}
}

// block terminates without calling the rest of the chain.
func block(jetbridge.HandlerFunc) jetbridge.HandlerFunc {
	return func(context.Context, *jetbridge.Task) (any, error) {
		return nil, jetbridge.Terminate("mw_blocked", "blocked by middleware")
	}
}

// useMiddleware registers the conformance middleware in the order SPEC §12.2
// gives: outer, group (conf:mw*), inner, block (conf:mw_blocked).
func useMiddleware(svc *jetbridge.Service) error {
	svc.Use(tagger("outer"))
	if err := svc.UseFor("conf:mw*", tagger("group")); err != nil {
		return err
	}
	svc.Use(tagger("inner"))
	return svc.UseFor("conf:mw_blocked", block)
}
