using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Tests;

/// <summary>The gateway's meter is static, so every gateway of the test process records on it, and a gauge such as the
/// connection count moves with other tests' connections: these tests run alone, after the parallel ones.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ObservabilityCollection
{
    public const string Name = "observability";
}

[Collection(ObservabilityCollection.Name)]
public sealed partial class ObservabilityTests
{
    [Fact]
    public async Task MetricsEndpointCountsAPublishAndItsDelivery()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync();
        var topic = GatewayFixture.NewTopic("metrics");
        var before = await ScrapeAsync(gateway);

        await using var client = await WsClient.ConnectAsync(gateway.WebSocketUri());
        await client.SubscribeAsync(topic);
        await gateway.PublishAsync(topic, "{\"n\":1}");
        var delivered = await client.MessagesAsync(1);
        Assert.Equal("{\"n\":1}", delivered[0].RawData);

        // Nothing else runs meanwhile, but a gateway of an earlier test may still be closing: at least, not exactly.
        var after = await ScrapeAsync(gateway);
        Assert.True(Sample(after, "orleanspush_messages_in_total") >= Sample(before, "orleanspush_messages_in_total") + 1, "messages in did not move");
        Assert.True(Sample(after, "orleanspush_messages_out_total") >= Sample(before, "orleanspush_messages_out_total") + 1, "messages out did not move");
        Assert.True(Sample(after, "orleanspush_fanout_latency_milliseconds_count") >= Sample(before, "orleanspush_fanout_latency_milliseconds_count") + 1,
            "the fan-out latency histogram recorded nothing");
        Assert.True(Sample(after, "orleanspush_connections", ("transport", "ws")) >= Sample(before, "orleanspush_connections", ("transport", "ws")) + 1,
            "the open ws connection is not counted");
        Assert.True(Sample(after, "orleanspush_subscriptions") >= Sample(before, "orleanspush_subscriptions") + 1, "the subscription is not counted");
        Assert.Contains("# TYPE orleanspush_connections gauge", after, StringComparison.Ordinal);
        Assert.Contains("# TYPE orleanspush_messages_in_total counter", after, StringComparison.Ordinal);
        Assert.Contains("# TYPE orleanspush_fanout_latency_milliseconds histogram", after, StringComparison.Ordinal);
        Assert.Equal((double)Environment.ProcessorCount, Sample(after, "dotnet_process_cpu_count"));

        // The instrument's bucket advice is applied: a 1 ms bucket at the low end, and every recorded latency under +Inf.
        Assert.Contains(Series(after, "orleanspush_fanout_latency_milliseconds_bucket"), labels => labels.GetValueOrDefault("le") == "1");
        Assert.Equal(Sample(after, "orleanspush_fanout_latency_milliseconds_count"),
            Sample(after, "orleanspush_fanout_latency_milliseconds_bucket", ("le", "+Inf")));

        // A resume from before the first message replays it all: a recovery counted as recovered="true".
        await using var resumer = await WsClient.ConnectAsync(gateway.WebSocketUri());
        var ok = await resumer.SubscribeAsync(topic, since: new { epoch = delivered[0].Epoch, seq = 0 });
        Assert.True(ok.Recovered);
        var resumed = await ScrapeAsync(gateway);
        Assert.True(Sample(resumed, "orleanspush_recoveries_total", ("recovered", "true")) > Sample(before, "orleanspush_recoveries_total", ("recovered", "true")),
            "the recovery was not counted");
    }

    [Fact]
    public async Task MetricsCountAConnectionClosedAsASlowConsumer()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:MaxMessageBytes"] = "8192",
            ["OrleansPush:Gateway:OutboundQueueBytes"] = "65536",
            ["OrleansPush:Gateway:SlowCloseGrace"] = "00:00:01",
        });
        var topic = GatewayFixture.NewTopic("slowmetric");
        var before = Sample(await ScrapeAsync(gateway), "orleanspush_slow_consumer_disconnects_total", ("transport", "ws"));
        await using var stalled = await WsClient.ConnectAsync(gateway.WebSocketUri(), read: false, receiveBuffer: 4096);
        await stalled.SendAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{topic}\"}}");
        await Task.Delay(300);

        // Bounded: at most 200 batches of 20 messages of ~4 KB (16 MB), and 30 s.
        var padding = new string('p', 4000);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        var counted = false;
        for (var b = 0; b < 200 && !counted && DateTime.UtcNow < deadline; b++)
        {
            var batch = "[" + string.Join(",", Enumerable.Range(0, 20).Select(i => $"{{\"topic\":\"{topic}\",\"data\":{{\"p\":\"{padding}\"}}}}")) + "]";
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            using var response = await gateway.Http.PostAsync("/api/publish", new StringContent(batch), cts.Token);
            Assert.True(response.IsSuccessStatusCode);
            counted = b % 5 == 4 && Sample(await ScrapeAsync(gateway), "orleanspush_slow_consumer_disconnects_total", ("transport", "ws")) > before;
        }

        Assert.True(counted, "no slow-consumer disconnect was counted under transport=\"ws\"");
    }

    [Fact]
    public async Task JsonLogsSettingSwitchesTheConsoleToTheJsonFormatter()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?> { ["OrleansPush:Logging:Json"] = "true" });
        var console = gateway.Services.GetRequiredService<IOptionsMonitor<ConsoleLoggerOptions>>().CurrentValue;
        Assert.Equal(ConsoleFormatterNames.Json, console.FormatterName);
    }

    internal static async Task<string> ScrapeAsync(TestGateway gateway)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var response = await gateway.Http.GetAsync("/metrics", cts.Token);
        response.EnsureSuccessStatusCode();
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType, StringComparison.Ordinal);
        return await response.Content.ReadAsStringAsync(cts.Token);
    }

    /// <summary>The sum of a metric's samples whose labels include every given pair (0 when none match).</summary>
    internal static double Sample(string scrape, string metric, params (string Name, string Value)[] labels) =>
        Parse(scrape).Where(s => s.Metric == metric && labels.All(l => s.Labels.GetValueOrDefault(l.Name) == l.Value)).Sum(s => s.Value);

    /// <summary>The label sets a metric's samples carry.</summary>
    internal static IEnumerable<Dictionary<string, string>> Series(string scrape, string metric) =>
        Parse(scrape).Where(s => s.Metric == metric).Select(s => s.Labels);

    /// <summary>The samples of a Prometheus text scrape, from lines <c>name{label="value",...} value [timestamp]</c>.</summary>
    private static IEnumerable<(string Metric, Dictionary<string, string> Labels, double Value)> Parse(string scrape)
    {
        foreach (var line in scrape.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            var open = line.IndexOf('{', StringComparison.Ordinal);
            var close = open < 0 ? -1 : line.LastIndexOf('}');
            var nameEnd = open < 0 ? line.IndexOf(' ', StringComparison.Ordinal) : open;
            if (open >= 0)
            {
                foreach (Match label in LabelPattern().Matches(line[(open + 1)..close]))
                {
                    labels[label.Groups[1].Value] = Regex.Unescape(label.Groups[2].Value);
                }
            }

            var value = line[((close < 0 ? nameEnd : close) + 1)..].Trim().Split(' ')[0];
            yield return (line[..nameEnd], labels, double.Parse(value, CultureInfo.InvariantCulture));
        }
    }

    [GeneratedRegex("""([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)""", RegexOptions.CultureInvariant)]
    private static partial Regex LabelPattern();
}
