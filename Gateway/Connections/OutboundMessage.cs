namespace OrleansPush.Gateway.Connections;

/// <summary>
/// One message as this gateway sends it. Each wire form is encoded at most once, on first use, and the same
/// encoded object is written to every connection that speaks that form (SignalR's SerializedHubMessage habit).
/// </summary>
public sealed class OutboundMessage(TopicMessage message)
{
    private readonly object?[] _forms = new object?[WireForm.SlotCount];

    public TopicMessage Message { get; } = message;

    /// <summary>The encoding of this message in <paramref name="form"/>. Called from one fan-out shard at a time;
    /// were two threads to race, both would compute the same bytes and one would be kept.</summary>
    public T Encoded<T>(WireForm<T> form) where T : class => (T)(_forms[form.Slot] ??= form.Encode(Message));
}

/// <summary>A distinct wire encoding of a message (raw WebSocket JSON, SignalR, SSE, ...).</summary>
public abstract class WireForm
{
    public const int SlotCount = 8;
    private static int _nextSlot = -1;

    protected WireForm()
    {
        Slot = Interlocked.Increment(ref _nextSlot);
        if (Slot >= SlotCount)
        {
            throw new InvalidOperationException("More wire forms than OutboundMessage has slots for; raise WireForm.SlotCount.");
        }
    }

    internal int Slot { get; }
}

public abstract class WireForm<T> : WireForm where T : class
{
    public abstract T Encode(TopicMessage message);
}
