package jbprom_test

import (
	"net/http"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
	"github.com/jetbridge/jetbridge/interop/go/jbprom"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The guide's sample (interop/go/README.md, "Metrics"), kept compiling here.
func Example() {
	var svc *jetbridge.Service // from AddService
	if svc == nil {
		return
	}
	// after AddService, before Serve:
	svc.Use(jbprom.Middleware())
	http.Handle("/metrics", promhttp.Handler())
	go http.ListenAndServe(":9100", nil)
}
