package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/origin"
	"github.com/livefuse/livefuse/transcode"
)

func newTestHub(t *testing.T) *origin.Hub {
	t.Helper()
	hub, err := origin.NewHub(origin.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	return hub
}

// TestHubSourceTellsEnd: the transcoder's reader says when its source
// stream ended (the renditions end too), and only then.
func TestHubSourceTellsEnd(t *testing.T) {
	for _, tc := range []struct {
		name  string
		end   func(hub *origin.Hub, f *origin.Feed)
		ended bool
	}{
		{name: "clean end", end: func(_ *origin.Hub, f *origin.Feed) { f.Unpublish(); f.Close() }, ended: true},
		{name: "kicked", end: func(hub *origin.Hub, _ *origin.Feed) { hub.Kick("live", "a") }, ended: true},
		{name: "publisher lost (slate)", end: func(_ *origin.Hub, f *origin.Feed) { f.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := newTestHub(t)
			f, err := hub.Publish("live", "a", origin.FeedMain, av.Source{Protocol: "test"})
			if err != nil {
				t.Fatal(err)
			}
			rd, err := hubSource{hub}.Subscribe("live", "a")
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			tc.end(hub, f)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err = rd.ReadPackets(ctx, nil)
			if got := errors.Is(err, transcode.ErrSourceEnded); got != tc.ended {
				t.Errorf("ReadPackets: %v; source ended %v, want %v", err, got, tc.ended)
			}
		})
	}
}

// TestHubPublisherReportsRenditions: publishing and ending a rendition is
// reported, and an unpublished rendition's stream ends at once.
func TestHubPublisherReportsRenditions(t *testing.T) {
	hub := newTestHub(t)
	var mu sync.Mutex
	var events []string
	pub := hubPublisher{hub: hub, changed: func(app, name string) {
		mu.Lock()
		events = append(events, app+"/"+name)
		mu.Unlock()
	}}
	fw, err := pub.Publish("live", "a_low", av.Source{Protocol: "transcode"})
	if err != nil {
		t.Fatal(err)
	}
	if _, live := hub.Status("live", "a_low"); !live {
		t.Fatal("rendition not live after Publish")
	}
	fw.Unpublish()
	fw.Close()
	if _, live := hub.Status("live", "a_low"); live {
		t.Error("rendition still live after Unpublish and Close (it would show the slate)")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || events[0] != "live/a_low" || events[1] != "live/a_low" {
		t.Errorf("events %v, want the publish and the end of live/a_low", events)
	}
}
