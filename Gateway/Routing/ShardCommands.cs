using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Routing;

/// <summary>What a shard's loop is asked to do. Stream events come as they are (<see cref="TopicMessage"/>,
/// <see cref="TopicMessageBatch"/>, <see cref="PresenceChanged"/>), so the hot path allocates nothing for them; the rest
/// are these commands.</summary>
internal abstract record ShardCommand;

/// <summary>A subscribe. <see cref="Admitted"/> completes when it is recorded (or refused); <see cref="Completion"/> when
/// the subscription is live, after any replay.</summary>
internal sealed record SubscribeCommand(PushConnection Connection, string Topic, Since? Since, int Last, bool PresenceEvents, bool Hold) : ShardCommand
{
    public TaskCompletionSource Admitted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public TaskCompletionSource<SubscribeResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Without <c>since</c> in a namespace that keeps a latest value (<c>KeepLatest</c>, <c>Retain</c>): that
    /// value comes first.</summary>
    public bool Latest { get; init; }

    /// <summary>Asks for history (<c>since</c> or <c>last</c>) or the latest value first.</summary>
    public bool Resumes => Since is not null || Last > 0 || Latest;

    public void Fail(Exception error)
    {
        Completion.TrySetException(error);
        Admitted.TrySetResult();
    }

    public void Cancel()
    {
        Completion.TrySetCanceled();
        Admitted.TrySetResult();
    }
}

internal sealed record UnsubscribeCommand(PushConnection Connection, string Topic) : ShardCommand;

/// <summary>The grain answered (or failed) the first interest lease of a topic.</summary>
internal sealed record Registered(LocalTopic Topic, TopicPosition? Position, Exception? Error) : ShardCommand;

/// <summary>A page of history for a topic's fill.</summary>
internal sealed record FillPageRead(LocalTopic Topic, int Generation, HistorySlice? Slice, Exception? Error) : ShardCommand;

/// <summary>A failed fill read's backoff is over.</summary>
internal sealed record FillRetryDue(LocalTopic Topic, int Generation) : ShardCommand;

/// <summary>A page of history for one subscription's catch-up.</summary>
internal sealed record CatchUpPageRead(Subscription Subscription, int Generation, HistorySlice? Slice, Exception? Error) : ShardCommand;

/// <summary>A failed catch-up read's backoff is over.</summary>
internal sealed record CatchUpRetryDue(Subscription Subscription, int Generation) : ShardCommand;

/// <summary>The connection of a waiting catch-up has room again.</summary>
internal sealed record Drained(Subscription Subscription) : ShardCommand;

/// <summary>An automatic subscription's hold is over.</summary>
internal sealed record HoldElapsed(Subscription Subscription) : ShardCommand;

/// <summary>The grain's position at lease renewal.</summary>
internal sealed record PositionCheck(string Topic, TopicPosition Position) : ShardCommand;

/// <summary>Drop the leases of topics without subscribers for the linger time.</summary>
internal sealed record SweepCommand : ShardCommand
{
    public static readonly SweepCommand Instance = new();
}
