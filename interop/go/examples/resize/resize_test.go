package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"testing"

	jetbridge "github.com/jetbridge/jetbridge/interop/go"
)

// A handler is a plain function: test it with a hand-made Task.
func TestResize(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 40, 20))
	for x := range 40 {
		for y := range 20 {
			src.Set(x, y, color.RGBA{R: uint8(x * 6), A: 255})
		}
	}
	var img bytes.Buffer
	if err := png.Encode(&img, src); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(request{Image: img.Bytes(), Width: 10})

	result, err := resize(context.Background(), &jetbridge.Task{Payload: payload, ContentType: "application/json"})
	if err != nil {
		t.Fatal(err)
	}
	out := result.(jetbridge.Bytes)
	got, err := png.Decode(bytes.NewReader(out.Data))
	if err != nil {
		t.Fatal(err)
	}
	if out.ContentType != "image/png" || got.Bounds().Dx() != 10 || got.Bounds().Dy() != 5 {
		t.Errorf("got %s %v", out.ContentType, got.Bounds())
	}
}

func TestResizeBadInput(t *testing.T) {
	for _, payload := range []string{`{"width": 10}`, `{"image": "AAAA", "width": 0}`, `[]`} {
		_, err := resize(context.Background(), &jetbridge.Task{Payload: []byte(payload)})
		var e *jetbridge.Error
		if !errors.As(err, &e) || !e.Terminal {
			t.Errorf("%s: %v, want a terminate", payload, err)
		}
	}
}
