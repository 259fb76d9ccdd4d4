namespace OrleansPush.Gateway.Connections;

/// <summary>
/// One message as this gateway sends it. Each wire form is encoded at most once, on first use, and the same
/// encoded object is written to every connection that speaks that form (SignalR's SerializedHubMessage habit).
/// <para>A form that cannot encode the message fails once: the failure is kept in the form's slot, and every
/// connection of that form gets the same <see cref="MessageEncodingException"/> at once instead of encoding again.
/// The fan-out tells (closes) those connections and goes on with the others.</para>
/// </summary>
public sealed class OutboundMessage(TopicMessage message)
{
    private readonly object?[] _forms = new object?[WireForm.SlotCount];

    public TopicMessage Message { get; } = message;

    /// <summary>The topic's message just before this one (seq − 1, same epoch), when the fan-out knows it: the source of
    /// a delta (<c>Delta</c> namespaces). Set by the fan-out before any connection encodes this message.</summary>
    public TopicMessage? Previous { get; internal set; }

    /// <summary>The topic's namespace conflates (<c>Conflate</c>): a connection that still has an older message of the
    /// topic queued replaces it with this one rather than queue both.</summary>
    public bool Conflate { get; internal set; }

    /// <summary>Sent to one subscription as part of its catch-up (a replay from history, or the latest value a subscribe
    /// without <c>since</c> gets first), not from the live fan-out.</summary>
    public bool Replayed { get; internal set; }

    /// <summary>The topic's latest value (<c>KeepLatest</c>, <c>Retain</c>), sent to one subscription because it subscribed
    /// without <c>since</c>; it may be older than the position the subscription goes on from. MQTT sends it with the retain
    /// flag; other transports send it as any message.</summary>
    public bool Retained { get; internal set; }

    /// <summary>The size the message counts for in a catch-up's flow control, before a transport encodes it: its data,
    /// its topic and a frame's overhead.</summary>
    public int EstimatedBytes => EstimateBytes(Message);

    /// <summary>The encoding of this message in <paramref name="form"/>. Called from one fan-out shard at a time;
    /// were two threads to race, both would compute the same bytes and one would be kept.</summary>
    /// <exception cref="MessageEncodingException">The form cannot carry this message.</exception>
    public T Encoded<T>(WireForm<T> form) where T : class
    {
        var slot = _forms[form.Slot];
        if (slot is null)
        {
            try
            {
                slot = form.Encode(this);
            }
            catch (Exception ex)
            {
                slot = new MessageEncodingException(Message, form.GetType().Name, ex);
            }

            _forms[form.Slot] = slot;
        }

        return slot as T ?? throw (MessageEncodingException)slot;
    }

    public static int EstimateBytes(TopicMessage message) => message.Data.Length + message.Topic.Length + 96;
}

/// <summary>A wire form could not encode a message (its payload is not what the form can carry). The connections of
/// that form are told and closed; other forms, and so other connections, are not affected.</summary>
public sealed class MessageEncodingException : Exception
{
    public MessageEncodingException()
    {
    }

    public MessageEncodingException(string message) : base(message)
    {
    }

    public MessageEncodingException(string message, Exception inner) : base(message, inner)
    {
    }

    public MessageEncodingException(TopicMessage message, string form, Exception inner)
        : base($"Seq {message.Seq} of {message.Topic} cannot be encoded as {form}.", inner)
    {
    }
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

    /// <summary>A form that needs more than the message itself (a delta needs <see cref="OutboundMessage.Previous"/>,
    /// or another form's encoding) overrides this.</summary>
    public virtual T Encode(OutboundMessage outbound) => Encode(outbound.Message);
}
