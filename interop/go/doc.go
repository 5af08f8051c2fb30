// Package jetbridge runs Jetbridge task handlers in Go.
//
// A Jetbridge dispatcher sends each attempt of a task to a handler service as
// a NATS request; this package is the handler side of that wire protocol
// (protocol/SPEC.md in the Jetbridge repository, version 1). It registers a
// NATS micro service, decodes and checks each request, runs your
// [HandlerFunc] with a context that carries the attempt's deadline and its
// cancellation, sends heartbeats while the handler runs, and encodes the
// reply, so a handler is an ordinary Go function:
//
//	svc, _ := jetbridge.AddService(nc, "mailer", "1.0.0")
//	svc.AddHandler("email:new", func(ctx context.Context, t *jetbridge.Task) (any, error) {
//		var in struct{ To string }
//		if err := t.Decode(&in); err != nil {
//			return nil, err
//		}
//		return map[string]bool{"sent": true}, nil
//	})
//	svc.Serve(ctx) // until ctx is done, then drains
//
// Return [Retry] or [Terminate] errors to choose the outcome of a failure;
// any other error, or a panic, asks for a retry with code [CodeHandlerError].
package jetbridge
