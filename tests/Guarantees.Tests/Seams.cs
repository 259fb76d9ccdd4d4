using OrleansPush.Gateway.Routing;
using OrleansPush.Grains.History;

namespace OrleansPush.Guarantees.Tests;

/// <summary>
/// The history store seam: the real store (shared by every silo of the schedule, as Redis or PostgreSQL would be)
/// behind faults drawn from the plan. An append can fail before it touches the store, be applied and then throw (the
/// ambiguous failure), throw at once and land a little later (a write that arrives after its caller gave up), or be
/// slow; loads and key look-ups can fail or be slow.
/// </summary>
public sealed class FaultyStore(IHistoryStore inner, FaultPlan plan) : IHistoryStore
{
    private readonly List<Task> _late = [];

    public IHistoryStore Inner { get; } = inner;

    /// <summary>Waits for the appends still on their way (a late landing must land or be refused before the check).</summary>
    public Task LateAppendsAsync()
    {
        lock (_late)
        {
            return Task.WhenAll(_late);
        }
    }

    public async Task<StoredHistory?> LoadAsync(string topic, HistoryBounds bounds, CancellationToken cancellationToken = default)
    {
        await ReadFaultAsync("load", topic);
        return await Inner.LoadAsync(topic, bounds, cancellationToken);
    }

    public async Task<TopicPosition?> FindKeyAsync(string topic, string key, CancellationToken cancellationToken = default)
    {
        await ReadFaultAsync("findkey", topic);
        return await Inner.FindKeyAsync(topic, key, cancellationToken);
    }

    public Task ClearLatestAsync(string topic, string epoch, long head, CancellationToken cancellationToken = default) =>
        Inner.ClearLatestAsync(topic, epoch, head, cancellationToken);

    public async Task AppendAsync(string topic, string epoch, IReadOnlyList<TopicMessage> messages, IReadOnlyList<IdempotencyKey> keys, HistoryBounds bounds,
        LatestChange latest, CancellationToken cancellationToken = default)
    {
        var range = $"{topic} {epoch}/{messages[0].Seq}..{messages[^1].Seq}";
        var fault = plan.Choose("store.append", topic,
            (Kind: "fail", Rate: plan.Rates.StoreFail),
            (Kind: "ambiguous", Rate: plan.Rates.StoreAmbiguous),
            (Kind: "late", Rate: plan.Rates.StoreLandLate),
            (Kind: "slow", Rate: plan.Rates.StoreSlow));
        switch (fault)
        {
            case ("fail", _):
                plan.Journal.Add($"store append fails (not applied) {range}");
                throw new TimeoutException("Injected: the store did not answer (nothing was written).");
            case ("ambiguous", _):
                await Inner.AppendAsync(topic, epoch, messages, keys, bounds, latest, cancellationToken);
                plan.Journal.Add($"store append applied, then fails {range}");
                throw new TimeoutException("Injected: the store did not answer (the append was written).");
            case ("late", var size):
                var delay = TimeSpan.FromMilliseconds(50 + (size * 400));
                plan.Journal.Add($"store append fails now, lands in {delay.TotalMilliseconds:0} ms {range}");
                lock (_late)
                {
                    _late.Add(LandLateAsync(topic, epoch, [.. messages], [.. keys], bounds, latest, delay, range));
                }

                throw new TimeoutException("Injected: the store did not answer (the append is still on its way).");
            case ("slow", var size):
                await Task.Delay(TimeSpan.FromMilliseconds(size * 300), CancellationToken.None);
                break;
        }

        await Inner.AppendAsync(topic, epoch, messages, keys, bounds, latest, cancellationToken);
    }

    private async Task LandLateAsync(string topic, string epoch, TopicMessage[] messages, IdempotencyKey[] keys, HistoryBounds bounds, LatestChange latest, TimeSpan delay, string range)
    {
        await Task.Delay(delay);
        try
        {
            await Inner.AppendAsync(topic, epoch, messages, keys, bounds, latest);
            plan.Journal.Add($"store late append landed {range}");
        }
        catch (HistoryConflictException)
        {
            plan.Journal.Add($"store late append refused (head moved) {range}");
        }
    }

    private async Task ReadFaultAsync(string operation, string topic)
    {
        switch (plan.Choose("store." + operation, topic, (Kind: "fail", Rate: plan.Rates.StoreFail), (Kind: "slow", Rate: plan.Rates.StoreSlow)))
        {
            case ("fail", _):
                plan.Journal.Add($"store {operation} fails {topic}");
                throw new TimeoutException($"Injected: the store did not answer a {operation}.");
            case ("slow", var size):
                await Task.Delay(TimeSpan.FromMilliseconds(size * 300), CancellationToken.None);
                break;
        }
    }
}

/// <summary>
/// The stream seam of one gateway (<see cref="IGatewayEventFilter"/>): a topic's message event can be lost,
/// handled twice, handled later, or held back until the next event has been handled (reordered). Other events pass.
/// </summary>
public sealed class StreamFaults(FaultPlan plan, string gateway) : IGatewayEventFilter
{
    private readonly Lock _gate = new();
    private (GatewayEvent Item, Action<GatewayEvent> Handle)? _heldBack;

    public void OnEvent(GatewayEvent item, Action<GatewayEvent> handle)
    {
        var first = item switch
        {
            TopicMessage m => m,
            TopicMessageBatch b when b.Messages.Length > 0 => b.Messages[0],
            _ => null,
        };
        if (first is null)
        {
            handle(item);
            return;
        }

        var last = item is TopicMessageBatch batch ? batch.Messages[^1] : first;
        var what = $"{gateway} {first.Topic} {first.Epoch}/{first.Seq}..{last.Seq}";
        var fault = plan.Choose("stream", gateway + " " + first.Topic,
            (Kind: "drop", Rate: plan.Rates.StreamDrop),
            (Kind: "duplicate", Rate: plan.Rates.StreamDuplicate),
            (Kind: "delay", Rate: plan.Rates.StreamDelay),
            (Kind: "reorder", Rate: plan.Rates.StreamReorder));
        switch (fault)
        {
            case ("drop", _):
                plan.Journal.Add($"stream drop {what}");
                break;
            case ("duplicate", _):
                plan.Journal.Add($"stream duplicate {what}");
                handle(item);
                handle(item);
                break;
            case ("delay", var size):
                var delay = TimeSpan.FromMilliseconds(20 + (size * 600));
                plan.Journal.Add($"stream delay {delay.TotalMilliseconds:0} ms {what}");
                _ = Task.Delay(delay).ContinueWith(_ => handle(item), TaskScheduler.Default);
                break;
            case ("reorder", _):
                plan.Journal.Add($"stream hold back {what}");
                (GatewayEvent, Action<GatewayEvent>)? earlier;
                lock (_gate)
                {
                    earlier = _heldBack;
                    _heldBack = (item, handle);
                }

                if (earlier is var (e, h))
                {
                    h(e);
                }

                // Released after the next event, or after a while when none comes.
                _ = Task.Delay(300).ContinueWith(_ => Release(item), TaskScheduler.Default);
                break;
            default:
                handle(item);
                Release(null);
                break;
        }
    }

    private void Release(GatewayEvent? only)
    {
        (GatewayEvent Item, Action<GatewayEvent> Handle)? held;
        lock (_gate)
        {
            held = _heldBack;
            if (held is null || (only is not null && !ReferenceEquals(held.Value.Item, only)))
            {
                return;
            }

            _heldBack = null;
        }

        held.Value.Handle(held.Value.Item);
    }
}

/// <summary>
/// The gateway's calls to topic grains (an Orleans outgoing call filter on the gateway's own client): a call can fail
/// before it is sent, be slow, or be made and then fail (its answer lost: the grain did the work).
/// </summary>
public sealed class GrainCallFaults(FaultPlan plan, string gateway) : IOutgoingGrainCallFilter
{
    public async Task Invoke(IOutgoingGrainCallContext context)
    {
        if (context.InterfaceMethod?.DeclaringType != typeof(ITopicGrain))
        {
            await context.Invoke();
            return;
        }

        var method = context.InterfaceMethod.Name;
        var topic = context.TargetId.Key.ToString()!;
        var fault = plan.Choose("call." + method, gateway + " " + topic,
            (Kind: "fail", Rate: plan.Rates.CallFail),
            (Kind: "ambiguous", Rate: plan.Rates.CallAmbiguous),
            (Kind: "slow", Rate: plan.Rates.CallSlow));
        switch (fault)
        {
            case ("fail", _):
                plan.Journal.Add($"call {method} fails (not sent) {gateway} {topic}");
                throw new TimeoutException($"Injected: {method} on {topic} was not sent.");
            case ("slow", var size):
                // Sometimes longer than a publish attempt's timeout, so the gateway retries while this one is on its way.
                var delay = TimeSpan.FromMilliseconds(size < 0.8 ? size * 600 : 2500);
                plan.Journal.Add($"call {method} slow {delay.TotalMilliseconds:0} ms {gateway} {topic}");
                await Task.Delay(delay);
                break;
        }

        await context.Invoke();
        if (fault is ("ambiguous", _))
        {
            plan.Journal.Add($"call {method} made, answer lost {gateway} {topic}");
            throw new TimeoutException($"Injected: the answer of {method} on {topic} was lost.");
        }
    }
}
