namespace OrleansPush.Guarantees.Tests;

/// <summary>A position in a topic. Epochs are compared by the order the schedule first saw them in.</summary>
public readonly record struct Position(string Epoch, long Seq)
{
    public override string ToString() => $"{Epoch}/{Seq}";
}

/// <summary>What one publish answer said.</summary>
public enum PublishOutcome
{
    /// <summary>200 with a position.</summary>
    Acknowledged,

    /// <summary>503 "not published": certainly not in history, never will be.</summary>
    NotPublished,

    /// <summary>503 "may have been published".</summary>
    MayHaveBeenPublished,

    /// <summary>No answer (the gateway went away, the request failed): as good as "may have been".</summary>
    NoAnswer,
}

/// <summary>One logical publish: a payload of its own, and every answer its attempts got (a keyed publish is retried
/// with the same key and payload; a keyless one is never retried, its payload is not used again).</summary>
public sealed class PublishRecord(string topic, string payload, string? key)
{
    private readonly List<(PublishOutcome Outcome, Position? Position, string Detail, long AtMs)> _answers = [];

    public string Topic { get; } = topic;

    public string Payload { get; } = payload;

    public string? Key { get; } = key;

    public IReadOnlyList<(PublishOutcome Outcome, Position? Position, string Detail, long AtMs)> Answers
    {
        get
        {
            lock (_answers)
            {
                return _answers.ToList();
            }
        }
    }

    public void Add(PublishOutcome outcome, Position? position, string detail, long atMs)
    {
        lock (_answers)
        {
            _answers.Add((outcome, position, detail, atMs));
        }
    }

    /// <summary>The acknowledged positions (more than one distinct position is itself a violation).</summary>
    public IEnumerable<Position> Acknowledged => Answers.Where(a => a.Outcome == PublishOutcome.Acknowledged).Select(a => a.Position!.Value);

    /// <summary>Whether the publisher's last word was "not published" (nothing of it may exist anywhere).</summary>
    public bool FinallyNotPublished => Answers.Count > 0 && Answers[^1].Outcome == PublishOutcome.NotPublished && !Acknowledged.Any();
}

/// <summary>One message as a client received it.</summary>
public readonly record struct Delivery(Position Position, string Payload, bool BeforeOk, long AtMs);

/// <summary>
/// One subscription of one topic on one connection, from its <c>sub</c> to its end: what it asked for (<see
/// cref="Since"/>, or nothing: a fresh subscription), what the answer said, what arrived, and how it ended.
/// </summary>
public sealed class Segment(string subscriber, string topic, int connection, Position? since, string gateway)
{
    /// <summary>The end of a subscription still open when the schedule stopped its clients.</summary>
    public const string Stopped = "stopped";

    private readonly List<Delivery> _deliveries = [];

    public string Subscriber { get; } = subscriber;

    public string Topic { get; } = topic;

    public int Connection { get; } = connection;

    public string Gateway { get; } = gateway;

    /// <summary>The resume position asked for; null for a fresh subscription.</summary>
    public Position? Since { get; } = since;

    public Position? Ok { get; private set; }

    public bool? Recovered { get; private set; }

    /// <summary>Why it ended (<c>reset</c>, <c>closed</c>, <c>error</c>, ...) or null while it is open.</summary>
    public string? End { get; private set; }

    public string Name => $"{Subscriber}#{Connection} {Topic}";

    public IReadOnlyList<Delivery> Deliveries
    {
        get
        {
            lock (_deliveries)
            {
                return _deliveries.ToList();
            }
        }
    }

    /// <summary>When the answer came (journal milliseconds).</summary>
    public long OkAtMs { get; private set; }

    public void Deliver(Position position, string payload, long atMs)
    {
        lock (_deliveries)
        {
            _deliveries.Add(new Delivery(position, payload, Ok is null, atMs));
        }
    }

    public void Answer(Position ok, bool? recovered, long atMs)
    {
        Ok = ok;
        Recovered = recovered;
        OkAtMs = atMs;
    }

    public void Ended(string reason) => End ??= reason;

    public override string ToString() =>
        $"{Name} since={(Since?.ToString() ?? "-")} ok={(Ok?.ToString() ?? "-")} recovered={(Recovered?.ToString() ?? "-")} end={End ?? "open"} got={Ranges(Deliveries.Select(d => d.Position.Seq))}";

    /// <summary>Seqs as runs: <c>14-108,110-117</c>.</summary>
    private static string Ranges(IEnumerable<long> seqs)
    {
        var runs = new List<string>();
        long? start = null, end = null;
        foreach (var seq in seqs)
        {
            if (end is { } e && seq == e + 1)
            {
                end = seq;
                continue;
            }

            if (start is not null)
            {
                runs.Add(start == end ? $"{start}" : $"{start}-{end}");
            }

            start = end = seq;
        }

        if (start is not null)
        {
            runs.Add(start == end ? $"{start}" : $"{start}-{end}");
        }

        return string.Join(",", runs);
    }
}
