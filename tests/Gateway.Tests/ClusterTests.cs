using System.Net.Http.Json;

namespace OrleansPush.Gateway.Tests;

/// <summary>One silo and two gateways, each gateway an Orleans client with a stream of its own.</summary>
public sealed class ClusterTests
{
    private static readonly Dictionary<string, string?> ShortLease = new() { ["OrleansPush:Routing:Lease"] = "00:00:03" };

    [Fact]
    public async Task SubscriberOnOneGatewayReceivesWhatIsPublishedThroughTheOther()
    {
        await using var silo = await TestSilo.StartAsync(ShortLease);
        await using var a = await TestGateway.StartClientAsync(silo, ShortLease);
        await using var b = await TestGateway.StartClientAsync(silo, ShortLease);
        var topic = GatewayFixture.NewTopic("x");

        await using var onA = await WsClient.ConnectAsync(a.WebSocketUri());
        await using var onB = await WsClient.ConnectAsync(b.WebSocketUri());
        await onA.SubscribeAsync(topic);
        await onB.SubscribeAsync(topic);
        for (var i = 1; i <= 30; i++)
        {
            await (i % 2 == 0 ? a : b).PublishAsync(topic, $"{{\"i\":{i}}}");
        }

        foreach (var client in new[] { onA, onB })
        {
            var messages = await client.MessagesAsync(30);
            Assert.Equal(Enumerable.Range(1, 30).Select(i => (long)i), messages.Select(m => m.Seq));
            Assert.Equal(Enumerable.Range(1, 30).Select(i => $"{{\"i\":{i}}}"), messages.Select(m => m.RawData));
            Assert.True(await client.IsQuietAsync(TimeSpan.FromMilliseconds(300)));
        }
    }

    [Fact]
    public async Task GoneGatewaysLeaseLapsesAndTheTopicStopsRoutingToIt()
    {
        await using var silo = await TestSilo.StartAsync(ShortLease);
        await using var b = await TestGateway.StartClientAsync(silo, ShortLease);
        var topic = GatewayFixture.NewTopic("lease");
        await using var onB = await WsClient.ConnectAsync(b.WebSocketUri());
        await onB.SubscribeAsync(topic);

        var a = await TestGateway.StartClientAsync(silo, ShortLease);
        var onA = await WsClient.ConnectAsync(a.WebSocketUri());
        await onA.SubscribeAsync(topic);
        Assert.Equal(2, (await Info(b, topic)).Gateways.Length);

        // Gateway A dies without a word (its client connection vanishes with it).
        await onA.DisposeAsync();
        await a.DisposeAsync();

        // B keeps renewing; A's lease lapses within the lease time.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        TopicInfo info;
        do
        {
            await Task.Delay(500);
            info = await Info(b, topic);
        }
        while (info.Gateways.Length > 1 && DateTime.UtcNow < deadline);
        Assert.Single(info.Gateways);

        // Publishing still reaches B's subscriber, in order.
        await b.PublishAsync(topic, "{\"after\":1}");
        Assert.Equal("{\"after\":1}", (await onB.MessagesAsync(1)).Single().RawData);
    }

    private static async Task<TopicInfo> Info(TestGateway gateway, string topic) =>
        (await gateway.Http.GetFromJsonAsync<TopicInfo>("/api/topics/" + topic))!;

    private sealed record TopicInfo(string Topic, string Epoch, long Seq, string[] Gateways);
}
