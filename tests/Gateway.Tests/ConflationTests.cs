using System.Text;
using OrleansPush.Client;

namespace OrleansPush.Gateway.Tests;

/// <summary>Conflation (<c>Conflate</c>, DESIGN.md "State topics"): a subscriber that falls behind gets the newest
/// queued message of a conflating topic instead of every one, with the seq jump visible, and is not closed as slow for
/// it, where the same backlog closes a subscriber of an ordinary topic (<see cref="SlowConsumerTests"/>).</summary>
public sealed class ConflationTests
{
    [Fact]
    public async Task ASubscriberThatFellBehindGetsTheNewestStateAndIsNeverClosedSlow()
    {
        await using var gateway = await TestGateway.StartEmbeddedAsync(new Dictionary<string, string?>
        {
            ["OrleansPush:Gateway:MaxMessageBytes"] = "8192",
            ["OrleansPush:Gateway:OutboundQueueBytes"] = "524288",
            ["OrleansPush:Gateway:SlowCloseGrace"] = "00:00:01",
            ["OrleansPush:Topics:Namespaces:board:Conflate"] = "true",
            ["OrleansPush:Topics:Namespaces:board:Delta"] = "true",
        });
        var topic = GatewayFixture.NewTopic("board:match");
        await using var plain = await WsClient.ConnectAsync(gateway.WebSocketUri(), read: false, receiveBuffer: 4096);
        await using var delta = await WsClient.ConnectAsync(gateway.WebSocketUri(), read: false, receiveBuffer: 4096);
        await plain.SendAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{topic}\"}}");
        await delta.SendAsync($"{{\"op\":\"sub\",\"id\":1,\"topic\":\"{topic}\",\"delta\":\"fossil\"}}");
        await Task.Delay(300);

        // ~24 MB while neither reads: far more than their socket buffers and 512 KB queues hold.
        const int total = 6000;
        var published = new Dictionary<long, string>();
        var padding = new string('p', 4000);
        for (var start = 1; start <= total; start += 20)
        {
            var batch = new StringBuilder("[");
            for (var i = start; i < start + 20; i++)
            {
                var data = $"{{\"i\":{i},\"p\":\"{padding}\",\"t\":{i * 7 % 1000}}}";
                published[i] = data;
                batch.Append(i == start ? string.Empty : ",").Append($"{{\"topic\":\"{topic}\",\"data\":{data}}}");
            }

            using var response = await gateway.Http.PostAsync("/api/publish", new StringContent(batch.Append(']').ToString()));
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        }

        var (plainFrames, plainEnded) = await plain.DrainSlowlyAsync(50, TimeSpan.FromMilliseconds(5), f => f.Op == "msg" && f.Seq == total, TimeSpan.FromSeconds(60));
        var (deltaFrames, deltaEnded) = await delta.DrainSlowlyAsync(50, TimeSpan.FromMilliseconds(5), f => f.Op == "msg" && f.Seq == total, TimeSpan.FromSeconds(60));
        Assert.False(plainEnded, "the conflating subscriber was closed: " + string.Join(" | ", plainFrames.Where(f => f.Op != "msg").Select(f => f.Raw)));
        Assert.False(deltaEnded, "the conflating delta subscriber was closed: " + string.Join(" | ", deltaFrames.Where(f => f.Op != "msg").Select(f => f.Raw)));

        // In order, each a message as published, ending with the newest; some skipped (the visible jump).
        var messages = plainFrames.Where(f => f.Op == "msg").ToList();
        var seqs = messages.Select(f => f.Seq).ToList();
        Assert.Equal(seqs.Order(), seqs);
        Assert.Equal(seqs.Count, seqs.Distinct().Count());
        Assert.Equal(total, seqs[^1]);
        Assert.True(seqs.Count < total, "a subscriber that far behind should have had messages conflated");
        Assert.All(messages, m => Assert.Equal(published[m.Seq], m.RawData));

        // With deltas too: a message that took the place of one never written comes whole, so every one rebuilds.
        var rebuilt = new List<(long Seq, byte[] Bytes)>();
        foreach (var frame in deltaFrames.Where(f => f.Op == "msg"))
        {
            var bytes = frame.Json.TryGetProperty("text", out var text)
                ? Encoding.UTF8.GetBytes(text.GetString()!)
                : FossilDelta.Apply(rebuilt[^1].Bytes, Encoding.Latin1.GetBytes(frame.Json.GetProperty("delta").GetString()!));
            rebuilt.Add((frame.Seq, bytes));
        }

        Assert.Equal(total, rebuilt[^1].Seq);
        Assert.All(rebuilt, r => Assert.Equal(published[r.Seq], Encoding.UTF8.GetString(r.Bytes)));
    }
}
