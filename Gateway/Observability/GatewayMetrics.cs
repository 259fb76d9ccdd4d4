using System.Diagnostics.Metrics;

namespace OrleansPush.Gateway.Observability;

/// <summary>
/// The gateway's instruments, on the meter <see cref="MeterName"/>: any OpenTelemetry SDK picks them up with
/// <c>AddMeter("OrleansPush.Gateway")</c>, as the gateway's own does to serve them at <c>/metrics</c>
/// (<see cref="ObservabilityHosting"/>). The meter is static because the hot path (a shard's fan-out, a connection's
/// queue) has no container to ask for one; several gateways in one process therefore share it, and their numbers add up.
/// <para>Every call here is cheap and allocation-free for the caller; the fan-out records once per message with the
/// subscriber count as the increment, never once per subscriber.</para>
/// </summary>
public static class GatewayMetrics
{
    public const string MeterName = "OrleansPush.Gateway";

    private static readonly Meter Meter = new(MeterName, "1.0");

    private static readonly UpDownCounter<long> Connections = Meter.CreateUpDownCounter<long>(
        "orleanspush.connections", "{connection}", "Open client connections, by transport.");

    private static readonly UpDownCounter<long> Subscriptions = Meter.CreateUpDownCounter<long>(
        "orleanspush.subscriptions", "{subscription}", "Topic subscriptions held by open connections.");

    private static readonly Counter<long> MessagesIn = Meter.CreateCounter<long>(
        "orleanspush.messages.in", "{message}", "Messages accepted for publishing (HTTP API and clients).");

    private static readonly Counter<long> MessagesOut = Meter.CreateCounter<long>(
        "orleanspush.messages.out", "{message}", "Messages handed to local connections by the live fan-out.");

    /// <summary>Upper bounds (ms) of the fan-out latency buckets, given as the instrument's advice so that any SDK uses them:
    /// its default bounds (0, 5, 10, 25, ... ms) cannot tell a 1 ms fan-out from a 4 ms one.</summary>
    private static readonly IReadOnlyList<double> LatencyBucketsMs = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

    private static readonly Histogram<double> FanoutLatency = Meter.CreateHistogram<double>(
        "orleanspush.fanout.latency", "ms", "From the topic grain's publish time to the message's enqueue on this gateway.",
        tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBucketsMs });

    private static readonly Counter<long> SlowConsumers = Meter.CreateCounter<long>(
        "orleanspush.slow_consumer.disconnects", "{connection}", "Connections closed because their outbound queue overflowed.");

    private static readonly Counter<long> ConflatedMessages = Meter.CreateCounter<long>(
        "orleanspush.conflated", "{message}", "Messages of conflating topics replaced, unwritten, by a newer one in a connection's queue.");

    private static readonly Counter<long> Recoveries = Meter.CreateCounter<long>(
        "orleanspush.recoveries", "{subscription}", "Subscribes with a resume position, by whether every missed message was replayed.");

    private static readonly Counter<long> AuthFailures = Meter.CreateCounter<long>(
        "orleanspush.auth.failures", "{request}", "Refused tokens, by reason.");

    private static readonly Counter<long> RefusedPublishes = Meter.CreateCounter<long>(
        "orleanspush.publishes.refused", "{message}", "Client publishes refused, by transport and wire code.");

    public static void PublishRefused(string transport, string code) =>
        RefusedPublishes.Add(1, new KeyValuePair<string, object?>("transport", transport), new KeyValuePair<string, object?>("code", code));

    public static void ConnectionOpened(string transport) => Connections.Add(1, new KeyValuePair<string, object?>("transport", transport));

    public static void ConnectionClosed(string transport) => Connections.Add(-1, new KeyValuePair<string, object?>("transport", transport));

    public static void SubscriptionsChanged(int delta)
    {
        if (delta != 0)
        {
            Subscriptions.Add(delta);
        }
    }

    public static void MessagePublished() => MessagesIn.Add(1);

    /// <summary>One message went to <paramref name="subscribers"/> local connections; its fan-out latency is taken now.</summary>
    public static void Delivered(int subscribers, long publishedAtUnixMs)
    {
        if (subscribers > 0)
        {
            MessagesOut.Add(subscribers);
        }

        if (publishedAtUnixMs > 0 && FanoutLatency.Enabled)
        {
            FanoutLatency.Record(Math.Max(0, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - publishedAtUnixMs));
        }
    }

    public static void SlowConsumerClosed(string transport) => SlowConsumers.Add(1, new KeyValuePair<string, object?>("transport", transport));

    public static void Conflated(string transport) => ConflatedMessages.Add(1, new KeyValuePair<string, object?>("transport", transport));

    public static void Recovery(bool recovered) =>
        Recoveries.Add(1, new KeyValuePair<string, object?>("recovered", recovered ? "true" : "false"));

    public static void AuthFailed(string reason) => AuthFailures.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
