package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	_ "image/jpeg" // decode JPEG sources too
	"image/png"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
)

// maxWidth keeps one task from asking for an image larger than a reply can
// carry anyway.
const maxWidth = 2048

// request is the image:resize payload. Image is base64 in JSON, which Go
// decodes into []byte by itself.
type request struct {
	Image []byte `json:"image"`
	Width int    `json:"width"`
}

// resize is the image:resize handler. Bad input terminates the task, as no
// retry would fix it; a cancel stops the work between rows.
func resize(ctx context.Context, t *jetbridge.Task) (any, error) {
	var in request
	if err := t.Decode(&in); err != nil {
		return nil, err
	}
	if in.Width < 1 || in.Width > maxWidth {
		return nil, jetbridge.Terminate("bad_width", fmt.Sprintf("width must be 1 to %d, not %d", maxWidth, in.Width))
	}
	src, format, err := image.Decode(bytes.NewReader(in.Image))
	if err != nil {
		return nil, jetbridge.Terminate("bad_image", "image does not decode: "+err.Error())
	}
	_ = t.Heartbeat(ctx, new(0.0), "decoded "+format)

	dst, err := scale(ctx, src, in.Width, func(done float64) {
		_ = t.Heartbeat(ctx, new(done), "resizing")
	})
	if err != nil {
		return nil, err // cancelled: the service replies for us
	}
	var out bytes.Buffer
	if err := png.Encode(&out, dst); err != nil {
		return nil, err // unexpected: worth a retry
	}
	return jetbridge.Bytes{Data: out.Bytes(), ContentType: "image/png"}, nil
}
