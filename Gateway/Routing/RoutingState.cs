using OrleansPush.Gateway.Connections;

namespace OrleansPush.Gateway.Routing;

/// <summary>
/// Where a topic is at this gateway. Everything about a topic changes on its shard's loop only.
/// <list type="table">
/// <item><term><see cref="Registering"/></term><description>The first subscriber came; the grain has not answered the
/// interest lease yet. Subscribes wait; stream messages are held. Moves to <see cref="Live"/> when the grain answers
/// with its position (held messages are then handled as they would have been), or the topic is dropped and the waiting
/// subscribes fail <c>unavailable</c> when it cannot be reached.</description></item>
/// <item><term><see cref="Live"/></term><description>Messages are fanned out in seq order as they come. Moves to
/// <see cref="Filling"/> when a message comes past the next seq (a gap), a message of another epoch comes, or the lease
/// renewal finds the grain ahead with the topic quiet (a stranded tail) or in another epoch.</description></item>
/// <item><term><see cref="Filling"/></term><description>History is read page by page from the grain and fanned out;
/// stream messages are held meanwhile. A failed read is tried again with backoff for as long as it takes. A page of
/// another epoch switches the topic to it (from seq 0: the new epoch is delivered from its seq 1). A gap history no
/// longer holds ends the subscription of every live subscriber that misses it (<see cref="WireCodes.InsufficientState"/>)
/// and the fill goes on from what history has. Moves back to <see cref="Live"/> at the head of history, and the held
/// messages are handled (which may start another fill).</description></item>
/// </list>
/// </summary>
internal enum TopicState
{
    Registering,
    Live,
    Filling,
}

/// <summary>
/// Where one connection's subscription to a topic is.
/// <list type="table">
/// <item><term><see cref="Live"/></term><description>Gets every message the topic fans out, in order, once. Moves to
/// <see cref="CatchingUp"/> on a <c>sub</c> with <c>since</c> or <c>last</c>, or when a fill brings history while its
/// connection has no room (it then catches up at its own pace instead of overflowing).</description></item>
/// <item><term><see cref="Holding"/></term><description>An automatic subscription made as the connection opened, held for
/// <c>AutoSubscriptionHold</c> in case the client resumes it. Live messages are held. A <c>sub</c> from the client claims
/// it (as a resume or a plain subscribe); the hold's end releases it: either way to <see cref="CatchingUp"/>, which joins
/// at once when nothing is missing.</description></item>
/// <item><term><see cref="CatchingUp"/></term><description>History is read from the grain page by page and queued only
/// while the connection has room; when it has none, the connection's writer says when it has drained. Live messages
/// are held meanwhile. When what it has reaches what is held, the held messages follow and it is <see cref="Live"/>,
/// and only then is a pending <c>sub</c> answered. A gap in history is an honest <c>recovered:false</c> for a resume;
/// for a subscription nobody asked to resume (a released hold, a fill's overflow) it ends the subscription
/// (<see cref="WireCodes.InsufficientState"/>).</description></item>
/// <item><term><see cref="Closed"/></term><description>Its connection took no more (it is closing, or a long poll is full)
/// or its subscription ended: nothing is delivered; it waits to be removed.</description></item>
/// </list>
/// Every list a subscription or topic holds is bounded (<see cref="ShardLimits"/>): past the bound the held messages are
/// dropped and history, which holds them too, is read instead.
/// </summary>
internal enum SubscriptionState
{
    Live,
    Holding,
    CatchingUp,
    Closed,
}

/// <summary>The bounds of the fan-out and what happens at each.</summary>
internal static class ShardLimits
{
    /// <summary>Stream events, subscribes, position checks and sweeps waiting in one shard's inbox. Past it a stream event
    /// is dropped (a gap in seq like a lost event: the next message or the lease renewal fills it from history), a
    /// subscribe fails with <c>unavailable</c>, and a check or sweep waits for the next one. What the shard posts to
    /// itself (read results, timers) and unsubscribes are never refused: there is at most one of those per read in
    /// flight or per subscription.</summary>
    public const int Inbox = 100_000;

    /// <summary>Messages a topic holds while registering or filling. Past it they are dropped: the fill reads history to
    /// its head, which holds them.</summary>
    public const int TopicHeld = 10_000;

    /// <summary>Messages a subscription holds while it catches up or is held (and at most a quarter of the outbound
    /// bound in bytes). Past either they are dropped and the catch-up reads them from history.</summary>
    public const int SubscriptionHeld = 4096;

    /// <summary>Subscribes waiting for one topic's registration; past it they fail with <c>unavailable</c>.</summary>
    public const int Waiting = 100_000;

    /// <summary>The first page a catch-up reads; later pages are sized to about the connection's high-water mark.</summary>
    public const int FirstPage = 64;

    public const int MinPage = 16;

    public const int MaxPage = 1024;

    /// <summary>The page a topic's fill reads.</summary>
    public const int FillPage = 256;

    /// <summary>Epochs a topic has left, whose late messages are dropped at once.</summary>
    public const int RetiredEpochs = 4;

    /// <summary>Reads of a resume's history before it is answered <c>recovered:false</c> from where it got (a catch-up
    /// nobody waits on, and a fill, retry for as long as it takes).</summary>
    public const int ResumeReadAttempts = 6;

    public static readonly TimeSpan RetryBase = TimeSpan.FromMilliseconds(100);

    public static readonly TimeSpan RetryMax = TimeSpan.FromSeconds(5);

    /// <summary>Backoff with "equal jitter": between half and all of base·2^attempt, capped.</summary>
    public static TimeSpan Backoff(int attempt)
    {
        var ceiling = Math.Min(RetryMax.TotalMilliseconds, RetryBase.TotalMilliseconds * Math.Pow(2, Math.Min(attempt, 16)));
        return TimeSpan.FromMilliseconds((ceiling / 2) + (Random.Shared.NextDouble() * ceiling / 2));
    }
}

/// <summary>One topic at this gateway (see <see cref="TopicState"/>); owned by one shard's loop.</summary>
internal sealed class LocalTopic(string name, bool presence, bool delta = false, bool conflate = false)
{
    private readonly Queue<string> _retired = new();
    private Subscription[]? _snapshot;

    public string Name { get; } = name;

    public TopicState State { get; set; } = TopicState.Registering;

    public string Epoch { get; set; } = string.Empty;

    /// <summary>The last seq fanned out to this gateway's subscribers.</summary>
    public long Seq { get; set; }

    /// <summary>The namespace has delta compression: each message fanned out carries the one before it
    /// (<see cref="OutboundMessage.Previous"/>), the source of its delta.</summary>
    public bool Delta { get; } = delta;

    /// <summary>The namespace conflates: live messages are marked <see cref="OutboundMessage.Conflate"/>.</summary>
    public bool Conflate { get; } = conflate;

    /// <summary>With <see cref="Delta"/>: the last message fanned out.</summary>
    public TopicMessage? LastFanned { get; set; }

    public Dictionary<PushConnection, Subscription> Subscribers { get; } = [];

    public Subscription[] Snapshot => _snapshot ??= [.. Subscribers.Values];

    /// <summary>Local connections per member (user id, or "" for anonymous) when the namespace has presence.</summary>
    public Dictionary<string, int>? Members { get; } = presence ? new(StringComparer.Ordinal) : null;

    /// <summary>Subscribes waiting while <see cref="TopicState.Registering"/>.</summary>
    public List<SubscribeCommand>? Waiting { get; set; }

    /// <summary>Stream messages held while registering or filling (bounded: <see cref="ShardLimits.TopicHeld"/>).</summary>
    public List<TopicMessage>? Held { get; set; }

    /// <summary>Tells a fill's read results from those of an earlier fill.</summary>
    public int FillGeneration { get; set; }

    public int FillAttempts { get; set; }

    /// <summary>The seq at the previous lease renewal: a topic behind its grain and not moving is stalled.</summary>
    public long SeqAtLastCheck { get; set; } = -1;

    public long EmptySince { get; set; }

    /// <summary>The seq of the last message some connection could not encode (to log it once, not per connection).</summary>
    public long LastEncodingFailure { get; set; } = -1;

    public bool IsRetired(string epoch) => _retired.Contains(epoch);

    public void Retire(string epoch)
    {
        if (epoch.Length == 0 || _retired.Contains(epoch))
        {
            return;
        }

        if (_retired.Count >= ShardLimits.RetiredEpochs)
        {
            _retired.Dequeue();
        }

        _retired.Enqueue(epoch);
    }

    public void Changed() => _snapshot = null;
}

/// <summary>One connection's subscription to one topic (see <see cref="SubscriptionState"/>); owned by its shard's loop,
/// except <see cref="IDrainListener.OnDrained"/>, which only posts to the shard.</summary>
internal sealed class Subscription(LocalTopic topic, PushConnection connection, Action<Subscription> drained) : IDrainListener
{
    public LocalTopic Topic { get; } = topic;

    public PushConnection Connection { get; } = connection;

    public SubscriptionState State { get; set; } = SubscriptionState.Live;

    /// <summary>The last seq queued to this connection.</summary>
    public long LastSeq { get; set; }

    /// <summary>The connection has every message after this seq up to <see cref="LastSeq"/> (it joined live here, or a
    /// replay filled in from here). A resume from earlier cannot be served in order.</summary>
    public long ContiguousFrom { get; set; }

    /// <summary>Whether any message of the current epoch went to this connection (then it never goes back below
    /// <see cref="LastSeq"/>, even when it asks to resume from earlier).</summary>
    public bool Delivered { get; set; }

    public bool WantsPresence { get; set; }

    /// <summary>Live messages held while <see cref="SubscriptionState.Holding"/> or catching up: every message the topic
    /// fanned out after <see cref="HeldFrom"/>, in order.</summary>
    public List<OutboundMessage>? Held { get; set; }

    public long HeldFrom { get; set; }

    public long HeldBytes { get; set; }

    /// <summary>Tells this catch-up's read results from an earlier one's.</summary>
    public int Generation { get; set; }

    /// <summary>The <c>sub</c> answered when the catch-up joins live.</summary>
    public SubscribeCommand? Request { get; set; }

    /// <summary>Where the catch-up was asked to start: the request's <c>since</c> or <c>last</c>, applied when the first
    /// page says where history stands (<see cref="NeedsOrigin"/>).</summary>
    public Since? Since { get; set; }

    public int Last { get; set; }

    /// <summary>The catch-up starts with the topic's latest value instead of history (<see cref="SubscribeCommand.Latest"/>).</summary>
    public bool Latest { get; set; }

    public bool NeedsOrigin { get; set; }

    /// <summary>The resume's answer so far: null without <c>since</c>.</summary>
    public bool? Recovered { get; set; }

    /// <summary>The page read and not yet all queued.</summary>
    public HistorySlice? Page { get; set; }

    public int PageIndex { get; set; }

    public int PageSize { get; set; } = ShardLimits.FirstPage;

    public bool Reading { get; set; }

    public bool WaitingForRoom { get; set; }

    /// <summary>A page came in an epoch the topic is not in yet: the topic's fill decides, then the catch-up goes on.</summary>
    public bool AwaitingTopic { get; set; }

    public int Attempts { get; set; }

    void IDrainListener.OnDrained() => drained(this);
}

/// <summary>The start of a subscribe: <see cref="AdmittedAsync"/> once the subscription is recorded (its position known,
/// a catch-up perhaps under way), <see cref="Completed"/> once it is live (after any replay).</summary>
public sealed class Subscribing(Task admitted, Task<SubscribeResult> completed)
{
    public Task<SubscribeResult> Completed { get; } = completed;

    /// <summary>Completes (never faults) when the subscription is recorded or refused.</summary>
    internal Task Admitted { get; } = admitted;

    /// <summary>Completes when the subscription is recorded; throws when it was refused.</summary>
    public async Task AdmittedAsync()
    {
        await Admitted;
        if (Completed.IsFaulted || Completed.IsCanceled)
        {
            await Completed;
        }
    }
}
