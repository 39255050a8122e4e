package enqueue_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/enrollq/enrollq/enqueue"
)

// exampleRedisAddr is the Redis the example talks to; the tests' TestMain
// points it at their server.
var exampleRedisAddr = "127.0.0.1:6379"

// A signup handler enrolls the session it has just seen and moves on; a
// second submit of the same signup is reported as already queued, not as a
// failure.
func ExampleClient_Enroll() {
	rdb := redis.NewClient(&redis.Options{Addr: exampleRedisAddr, DB: 2})
	defer rdb.Close()

	// Start from an empty queue so the example can run again.
	const queue = "example-signup"
	insp := asynq.NewInspectorFromRedisClient(rdb)
	_ = insp.DeleteQueue(queue, true)
	defer insp.DeleteQueue(queue, true)

	c := enqueue.New(rdb, enqueue.WithQueue(queue))

	ctx := context.Background()
	const session = "0007b793-ae5d-45a2-8d9f-4a5b573c3271"
	got, err := c.Enroll(ctx, session, "acct-42")
	if err != nil {
		fmt.Println("enroll failed:", err)
		return
	}
	fmt.Println("enqueued", got.TaskID, "in", got.Queue)

	_, err = c.Enroll(ctx, session, "acct-42")
	fmt.Println("already queued:", errors.Is(err, enqueue.ErrAlreadyQueued))
	fmt.Println(err)

	// Output:
	// enqueued enroll:example-signup:0007b793-ae5d-45a2-8d9f-4a5b573c3271 in example-signup
	// already queued: true
	// session 0007b793-ae5d-45a2-8d9f-4a5b573c3271: already queued (pending in queue example-signup)
}
