package jetbridge

import (
	"context"

	"github.com/nats-io/nats.go"
)

// Serve blocks until ctx is done, then drains the service (see
// [Service.Stop]) within the drain timeout set by [WithDrainTimeout]. It
// returns nil after a drain, or nats.ErrConnectionClosed if the connection
// closed first. To drain on SIGTERM, pass a context from
// signal.NotifyContext.
func (s *Service) Serve(ctx context.Context) error {
	if !s.nc.IsClosed() {
		select {
		case <-ctx.Done():
		case <-s.closed:
		}
	}
	drainCtx := context.Background()
	if s.opts.drainTimeout > 0 {
		var cancel context.CancelFunc
		drainCtx, cancel = context.WithTimeout(drainCtx, s.opts.drainTimeout)
		defer cancel()
	}
	err := s.Stop(drainCtx)
	if err == nil && s.nc.IsClosed() {
		return nats.ErrConnectionClosed
	}
	return err
}

// Stop drains the service: it stops taking requests (they go to other
// replicas), lets every attempt already received finish and send its
// reply, then returns. If ctx is done first, the running attempts'
// contexts are cancelled with cause [ErrDraining] and Stop still waits for
// their handlers to return, so that no reply is lost half-sent.
func (s *Service) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.stopOnce.Do(func() {
		s.stopError = s.micro.drainEndpoints()
		close(s.draining)
	})
	defer s.unregisterOnce.Do(func() {
		s.micro.stop()
		s.nc.RemoveStatusListener(s.closed)
	})

	if s.nc.IsClosed() {
		// Nothing can be replied any more: end the attempts now.
		s.cancelAttempts(nats.ErrConnectionClosed)
	} else {
		s.waitOrCancel(ctx, s.callbacksDone())
	}
	// Every accepted request has been counted by now (see callbacksDone),
	// so no Add can race this Wait.
	finished := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(finished)
	}()
	s.waitOrCancel(ctx, finished)
	return s.stopError
}

// callbacksDone is closed once every request the server delivered before
// the endpoints were drained has passed through its endpoint callback,
// which counts it in inflight. After a flush the server sends nothing more
// on the drained subscriptions; a barrier then runs once each subscription
// has handled everything queued before it.
func (s *Service) callbacksDone() <-chan struct{} {
	done := make(chan struct{})
	if err := s.nc.Flush(); err != nil {
		close(done)
		return done
	}
	if err := s.nc.Barrier(func() { close(done) }); err != nil {
		close(done) // the connection closed: nothing more will arrive
	}
	return done
}

// waitOrCancel waits for ch; if ctx is done first it cancels the running
// attempts and keeps waiting, as they now return promptly.
func (s *Service) waitOrCancel(ctx context.Context, ch <-chan struct{}) {
	select {
	case <-ch:
	case <-ctx.Done():
		s.cancelAttempts(ErrDraining)
		<-ch
	}
}
