using System.Text;

namespace OrleansPush.Gateway.Tests;

public sealed class SlowConsumerTests
{
    [Fact]
    public async Task ClientThatStopsReadingIsClosedWhileOthersKeepReceiving()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:MaxMessageBytes"] = "8192",
            ["OrleansPush:Gateway:OutboundQueueBytes"] = "524288",
            ["OrleansPush:Gateway:SlowCloseGrace"] = "00:00:01",
        });
        var topic = GatewayFixture.NewTopic("slow");
        await using var fast = await WsClient.ConnectAsync(gateway.WebSocketUri());
        await using var alsoFast = await WsClient.ConnectAsync(gateway.WebSocketUri());
        await using var stalled = await WsClient.ConnectAsync(gateway.WebSocketUri(), read: false, receiveBuffer: 4096);
        await fast.SubscribeAsync(topic);
        await alsoFast.SubscribeAsync(topic);
        await stalled.SendAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{topic}\"}}");
        await Task.Delay(300);

        // ~24 MB in batches: far more than the stalled client's socket buffers and its 512 KB queue can hold.
        const int total = 6000;
        var padding = new string('p', 4000);
        for (var start = 1; start <= total; start += 20)
        {
            var batch = new StringBuilder("[");
            for (var i = start; i < start + 20; i++)
            {
                batch.Append(i == start ? string.Empty : ",").Append($"{{\"topic\":\"{topic}\",\"data\":{{\"i\":{i},\"p\":\"{padding}\"}}}}");
            }

            using var response = await gateway.Http.PostAsync("/api/publish", new StringContent(batch.Append(']').ToString()));
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        }

        // The readers get everything, in order, promptly: the stalled one did not hold them up.
        foreach (var client in new[] { fast, alsoFast })
        {
            var messages = await client.MessagesAsync(total, TimeSpan.FromSeconds(30));
            Assert.Equal(Enumerable.Range(1, total).Select(i => (long)i), messages.Select(m => m.Seq));
        }

        // The stalled client finds, once it reads, that it was cut off partway with the reason "slow" (or, when its
        // socket never drained, simply closed after the grace period).
        var (frames, ended) = await stalled.DrainAsync(TimeSpan.FromSeconds(20));
        Assert.True(ended, "the stalled connection must be closed by the server");
        var delivered = frames.Count(f => f.Op == "msg");
        Assert.True(delivered < total, $"the stalled client got {delivered} of {total}");
        var seqs = frames.Where(f => f.Op == "msg").Select(f => f.Seq).ToList();
        Assert.Equal(Enumerable.Range(1, seqs.Count).Select(i => (long)i), seqs);
    }
}
