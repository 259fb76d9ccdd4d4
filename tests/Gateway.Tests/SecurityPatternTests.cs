using OrleansPush.Gateway.Security;

namespace OrleansPush.Gateway.Tests;

/// <summary>Topic patterns of the <c>topics</c> and <c>publish</c> claims.</summary>
public sealed class SecurityPatternTests
{
    [Theory]
    [InlineData("chat:**", "chat:room1", true)]
    [InlineData("chat:**", "chat:eu:room1", true)]
    [InlineData("chat:**", "chatter:x", false)]
    [InlineData("chat:*", "chat:room1", true)]
    [InlineData("chat:*", "chat:eu:room1", false)]
    [InlineData("game:*:moves", "game:42:moves", true)]
    [InlineData("game:*:moves", "game:42:chat", false)]
    [InlineData("news", "news", true)]
    [InlineData("news", "news2", false)]
    [InlineData("news*", "news2", true)]
    [InlineData("news*", "news:2", false)]
    [InlineData("**", "user:alice", true)]
    [InlineData("*", "a:b", false)]
    [InlineData("a**b", "a:x:y:b", true)]
    [InlineData("a***b", "a:x:b", true)]
    public void PatternsMatchWithinAndAcrossSegments(string pattern, string topic, bool matches)
    {
        Assert.True(TopicPattern.TryParse(pattern, out var parsed));
        Assert.Equal(matches, parsed.Matches(topic));
    }

    [Theory]
    [InlineData("")]
    [InlineData("has space")]
    [InlineData("semi;colon")]
    public void ATextThatCannotMatchAnyTopicIsNotAPattern(string text)
    {
        Assert.False(TopicPattern.TryParse(text, out _));
    }

    [Fact]
    public void AHostilePatternIsMatchedCorrectly()
    {
        // 120 stars: a backtracking matcher would explode here; ours walks the topic once per token (its cost is
        // measured by no unit test, which would only time the machine).
        Assert.True(TopicPattern.TryParse(string.Concat(Enumerable.Repeat("*a", 120)), out var pattern));
        Assert.False(pattern.Matches(new string('a', 119)));
        Assert.True(pattern.Matches(new string('a', 120)));
        Assert.True(pattern.Matches(new string('a', 200)));
        Assert.False(pattern.Matches(new string('a', 199) + "b"));
    }
}
