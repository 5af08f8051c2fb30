package main

import (
	"context"
	"image"
	"image/color"
)

// scale resizes src to width, keeping its aspect ratio, by averaging the
// source pixels under each target pixel (a box filter: plain, and good
// enough for shrinking). It reports progress about ten times and stops
// when ctx is done.
func scale(ctx context.Context, src image.Image, width int, progress func(float64)) (image.Image, error) {
	b := src.Bounds()
	height := max(1, b.Dy()*width/b.Dx())
	dst := image.NewRGBA(image.Rect(0, 0, width, height))
	every := max(1, height/10)
	for y := range height {
		if y%every == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			progress(float64(y) / float64(height))
		}
		y0, y1 := b.Min.Y+y*b.Dy()/height, b.Min.Y+max((y+1)*b.Dy()/height, y*b.Dy()/height+1)
		for x := range width {
			x0, x1 := b.Min.X+x*b.Dx()/width, b.Min.X+max((x+1)*b.Dx()/width, x*b.Dx()/width+1)
			dst.Set(x, y, average(src, x0, x1, y0, y1))
		}
	}
	return dst, nil
}

// average is the mean colour of src over [x0,x1) × [y0,y1).
func average(src image.Image, x0, x1, y0, y1 int) color.Color {
	var r, g, b, a, n uint64
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			pr, pg, pb, pa := src.At(x, y).RGBA()
			r, g, b, a, n = r+uint64(pr), g+uint64(pg), b+uint64(pb), a+uint64(pa), n+1
		}
	}
	return color.RGBA64{uint16(r / n), uint16(g / n), uint16(b / n), uint16(a / n)}
}
