using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace OrleansPush.Gateway.Tests;

[Collection(GatewayCollection.Name)]
public sealed class ObservabilityTests(GatewayFixture fixture)
{
    private TestGateway Gateway => fixture.Gateway;

    [Fact]
    public async Task MetricsEndpointCountsAPublishAndItsDelivery()
    {
        var topic = GatewayFixture.NewTopic("metrics");
        var before = await ScrapeAsync(Gateway);

        await using var client = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        await client.SubscribeAsync(topic);
        await Gateway.PublishAsync(topic, "{\"n\":1}");
        var delivered = await client.MessagesAsync(1);
        Assert.Equal("{\"n\":1}", delivered[0].RawData);

        var after = await ScrapeAsync(Gateway);
        Assert.True(Sum(after, "orleanspush_messages_in_total") > Sum(before, "orleanspush_messages_in_total"), "messages in did not move");
        Assert.True(Sum(after, "orleanspush_messages_out_total") > Sum(before, "orleanspush_messages_out_total"), "messages out did not move");
        Assert.True(Sum(after, "orleanspush_fanout_latency_milliseconds_count") > Sum(before, "orleanspush_fanout_latency_milliseconds_count"),
            "the fan-out latency histogram recorded nothing");
        Assert.Contains("orleanspush_connections{transport=\"ws\"}", after, StringComparison.Ordinal);
        Assert.Contains("# TYPE orleanspush_connections gauge", after, StringComparison.Ordinal);
        Assert.Contains("# TYPE orleanspush_fanout_latency_milliseconds histogram", after, StringComparison.Ordinal);
        Assert.Contains("orleanspush_subscriptions ", after, StringComparison.Ordinal);

        // A resume from before the first message replays it all: a recovery counted as recovered="true".
        await using var resumer = await WsClient.ConnectAsync(Gateway.WebSocketUri());
        var ok = await resumer.SubscribeAsync(topic, since: new { epoch = delivered[0].Epoch, seq = 0 });
        Assert.True(ok.Recovered);
        var resumed = await ScrapeAsync(Gateway);
        Assert.True(Sample(resumed, "orleanspush_recoveries_total{recovered=\"true\"}") > Sample(before, "orleanspush_recoveries_total{recovered=\"true\"}"),
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
        var before = Sum(await ScrapeAsync(gateway), "orleanspush_slow_consumer_disconnects_total");
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
            counted = b % 5 == 4 && Sum(await ScrapeAsync(gateway), "orleanspush_slow_consumer_disconnects_total") > before;
        }

        Assert.True(counted, "no slow-consumer disconnect was counted");
        Assert.Contains("orleanspush_slow_consumer_disconnects_total{transport=\"ws\"}", await ScrapeAsync(gateway), StringComparison.Ordinal);
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

    /// <summary>One sample's value, named with its labels exactly as served (0 when absent).</summary>
    internal static double Sample(string scrape, string series) => scrape.Split('\n')
        .Where(line => line.StartsWith(series + " ", StringComparison.Ordinal))
        .Sum(line => double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));

    /// <summary>The sum of a metric's samples over all its label sets (0 when absent).</summary>
    internal static double Sum(string scrape, string metric) => scrape.Split('\n')
        .Where(line => line.StartsWith(metric + " ", StringComparison.Ordinal) || line.StartsWith(metric + "{", StringComparison.Ordinal))
        .Sum(line => double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture));
}
