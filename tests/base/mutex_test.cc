#include "base/mutex.h"

#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace sealvol {
namespace {

using std::chrono::milliseconds;

TEST(MutexTest, MutexLockExcludesOtherThreads) {
  Mutex mu;
  // A read, a pause and a write: without the lock, threads overwrite each
  // other's increments.
  volatile int64_t counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200000; ++i) {
        MutexLock lock(&mu);
        const int64_t seen = counter;
        for (int spin = 0; spin < 20; ++spin) {
          asm volatile("" ::: "memory");  // A pause the compiler keeps.
        }
        counter = seen + 1;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter, 800000);
}

TEST(MutexTest, TryLockFailsWhileHeldAndSucceedsAfter) {
  Mutex mu;
  mu.Lock();
  bool taken = true;
  std::thread([&] { taken = mu.TryLock(); }).join();
  EXPECT_FALSE(taken);
  mu.Unlock();
  bool taken_after = false;
  if (mu.TryLock()) {  // The form the thread-safety analysis follows.
    taken_after = true;
    mu.Unlock();
  }
  EXPECT_TRUE(taken_after);
}

TEST(MutexTest, MutexUnlockReleasesForItsScope) {
  Mutex mu;
  MutexLock lock(&mu);
  {
    MutexUnlock unlock(&mu);
    bool taken = false;
    std::thread([&] {
      if (mu.TryLock()) {
        taken = true;
        mu.Unlock();
      }
    }).join();
    EXPECT_TRUE(taken);
  }
  bool taken_again = true;
  std::thread([&] { taken_again = mu.TryLock(); }).join();
  EXPECT_FALSE(taken_again);
}

TEST(CondVarTest, WaitWakesOnSignal) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread signaller([&] {
    std::this_thread::sleep_for(milliseconds(20));
    MutexLock lock(&mu);
    ready = true;
    cv.SignalAll();
  });
  {
    MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    EXPECT_TRUE(ready);
  }
  signaller.join();
}

TEST(CondVarTest, WaitForTimesOutWithTheLockHeld) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(cv.WaitFor(&mu, milliseconds(30)));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(30));
  // Still held: another thread cannot take it.
  bool taken = true;
  std::thread([&] { taken = mu.TryLock(); }).join();
  EXPECT_FALSE(taken);
}

TEST(CondVarTest, WaitForReturnsTrueWhenSignalled) {
  Mutex mu;
  CondVar cv;
  bool ready = false;
  std::thread signaller([&] {
    MutexLock lock(&mu);
    ready = true;
    cv.Signal();
  });
  bool woken = true;
  {
    MutexLock lock(&mu);
    while (!ready) woken = cv.WaitFor(&mu, std::chrono::seconds(10));
  }
  signaller.join();
  EXPECT_TRUE(woken);
}

}  // namespace
}  // namespace sealvol
