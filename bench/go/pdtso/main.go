// pdtso: the baseline of `bench --bin tso`: PD's own Go client (github.com/tikv/pd/client, which batches
// concurrent GetTS calls on one Tso stream) asked for timestamps by N concurrent callers for S seconds.
// Prints one JSON line: {"callers":N,"ts_per_sec":X,"p99_us":Y}. Our code; only the PD client is a
// dependency (go.mod / go.sum beside this file), built by bench/src/bin/tso.rs into target/.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pd "github.com/tikv/pd/client"
)

func main() {
	endpoints := flag.String("pd", "127.0.0.1:2379", "PD endpoints, comma separated")
	callers := flag.Int("callers", 16, "concurrent callers")
	seconds := flag.Float64("seconds", 5, "how long to run")
	flag.Parse()

	c, err := pd.NewClientWithContext(context.Background(), strings.Split(*endpoints, ","), pd.SecurityOption{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pdtso:", err)
		os.Exit(1)
	}
	defer c.Close()
	if _, _, err := c.GetTS(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "pdtso: first ts:", err)
		os.Exit(1)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	lat := make([][]int64, *callers)
	errs := make(chan error, *callers)
	start := time.Now()
	for i := 0; i < *callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var last int64
			for !stop.Load() {
				t := time.Now()
				p, l, err := c.GetTS(context.Background())
				if err != nil {
					errs <- err
					return
				}
				ts := p<<18 | l
				if ts <= last {
					errs <- fmt.Errorf("ts went back for one caller: %d after %d", ts, last)
					return
				}
				last = ts
				lat[i] = append(lat[i], time.Since(t).Microseconds())
			}
		}(i)
	}
	time.Sleep(time.Duration(*seconds * float64(time.Second)))
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	select {
	case err := <-errs:
		fmt.Fprintln(os.Stderr, "pdtso:", err)
		os.Exit(1)
	default:
	}
	var all []int64
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	p99 := int64(0)
	if len(all) > 0 {
		p99 = all[len(all)*99/100]
	}
	out, _ := json.Marshal(map[string]any{"callers": *callers, "ts_per_sec": float64(len(all)) / elapsed, "p99_us": p99})
	fmt.Println(string(out))
}
