package collect

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// The formats offered, text first so that a client that accepts anything
// (curl's */*) gets text, while Prometheus, which ranks OpenMetrics first,
// gets OpenMetrics.
var (
	offerText = expfmt.NewFormat(expfmt.TypeTextPlain)
	offerOM   = expfmt.NewFormat(expfmt.TypeOpenMetrics)
	// An OpenMetrics Accept without a version means 0.0.1; the 1.0.0
	// output is what such a client parses too.
	offerOM001 = expfmt.FmtOpenMetrics_0_0_1
)

var gzipPool = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}

// freeBufs keeps a few response buffers. Unlike a sync.Pool it survives
// garbage collections, so a 400 KB exposition does not regrow its buffer on
// every scrape.
var freeBufs = make(chan *bytes.Buffer, 4)

func getBuf() *bytes.Buffer {
	select {
	case b := <-freeBufs:
		return b
	default:
		return new(bytes.Buffer)
	}
}

func putBuf(b *bytes.Buffer) {
	if b.Cap() > 16<<20 {
		return
	}
	b.Reset()
	select {
	case freeBufs <- b:
	default:
	}
}

// MetricsHandler serves the sources' metrics followed by the adapter's own.
// openMetrics false keeps the text format even for OpenMetrics scrapers
// (nginx-prometheus-exporter's counters without _total stay typed then).
func (c *Collector) MetricsHandler(openMetrics bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ft := negotiate(r.Header, openMetrics)
		timeout := c.timeout
		// Answer before Prometheus gives up: a source that hangs costs its
		// _up, not the whole scrape.
		if s := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); s != "" {
			if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
				if d := time.Duration(secs * 0.9 * float64(time.Second)); d < timeout {
					timeout = d
				}
			}
		}
		buf := getBuf()
		defer putBuf(buf)
		b := c.AppendScrape(buf.AvailableBuffer(), timeout, ft)
		buf.Write(b)
		if err := c.appendOwn(buf, ft); err != nil {
			c.log.Error("encode adapter metrics", "err", err)
		}
		if ft == exposition.OpenMetrics {
			buf.WriteString("# EOF\n")
		}
		h := w.Header()
		h.Set("Content-Type", ft.ContentType())
		h.Add("Vary", "Accept")
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			gz := gzipPool.Get().(*gzip.Writer)
			gz.Reset(w)
			_, _ = gz.Write(buf.Bytes())
			_ = gz.Close()
			gz.Reset(io.Discard)
			gzipPool.Put(gz)
			return
		}
		h.Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})
}

func (c *Collector) appendOwn(buf *bytes.Buffer, ft exposition.Format) error {
	if c.runtime != nil {
		b, err := c.runtime.appendTo(buf.AvailableBuffer(), ft)
		buf.Write(b)
		if err != nil {
			return err
		}
	}
	mfs, err := c.own.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		if ft == exposition.OpenMetrics {
			_, err = expfmt.MetricFamilyToOpenMetrics(buf, mf)
		} else {
			_, err = expfmt.MetricFamilyToText(buf, mf)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func negotiate(h http.Header, openMetrics bool) exposition.Format {
	if !openMetrics || h.Get("Accept") == "" {
		return exposition.Text
	}
	f := expfmt.NegotiateAccept(h, offerText, offerOM, offerOM001)
	if f.FormatType() == expfmt.TypeOpenMetrics {
		return exposition.OpenMetrics
	}
	return exposition.Text
}

func acceptsGzip(h string) bool {
	for part := range strings.SplitSeq(h, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) != "gzip" {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
